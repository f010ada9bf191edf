import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from tuneroute_trainer.config import TrainerConfig, load_config
from tuneroute_trainer.contract import describe

MINIMAL = {
    "model": {"id": "Qwen/Qwen3-30B-A3B"},
    "dataset": {"path": "/data/train.jsonl", "format": "chat"},
    "output": {"dir": "/out", "adapterName": "my-adapter"},
}


def _with(**over):
    cfg = json.loads(json.dumps(MINIMAL))
    for k, v in over.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


def test_yaml_file_with_camel_case_keys_gives_defaults(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        "model: {id: Qwen/Qwen3-30B-A3B}\n"
        "dataset: {path: /d.jsonl, format: chat}\n"
        "lora: {rank: 8, targetModules: [q_proj]}\n"
        "training: {maxSteps: 5, gradientAccumulation: 4}\n"
        "output: {dir: /out, adapterName: a1}\n"
        "report: {namespace: ns, name: job, intervalSeconds: 3}\n"
    )
    cfg = load_config(f)
    assert cfg.lora.rank == 8 and cfg.lora.alpha == 32 and cfg.lora.target_modules == ["q_proj"]
    assert cfg.lora.experts is True and cfg.lora.kernel == "auto"
    assert cfg.training.max_steps == 5 and cfg.training.gradient_accumulation == 4
    assert cfg.training.precision == "bf16" and cfg.training.sequence_length == 2048
    assert cfg.checkpoint.every_steps == 100 and cfg.checkpoint.resume is True
    assert cfg.report.interval_seconds == 3 and cfg.method == "sft" and cfg.model.revision == "main"
    # round-trips through the operator's rendering (camelCase JSON)
    assert TrainerConfig.model_validate(json.loads(cfg.model_dump_json(by_alias=True))) == cfg


def test_json_schema_describes_every_field_and_carries_constraints():
    schema = TrainerConfig.model_json_schema(by_alias=True)
    missing = []
    for name, model in {"TrainerConfig": schema, **schema["$defs"]}.items():
        for prop, spec in model.get("properties", {}).items():
            if not spec.get("description"):
                missing.append(f"{name}.{prop}")
    assert missing == []
    lora = schema["$defs"]["LoraSpec"]["properties"]
    assert lora["rank"]["minimum"] == 1 and lora["rank"]["maximum"] == 1024
    assert set(lora["kernel"]["enum"]) == {"auto", "triton", "grouped", "loop", "peft"}
    assert "pattern" in schema["$defs"]["AdapterOutput"]["properties"]["adapterName"]


@pytest.mark.parametrize(
    "over, field",
    [
        ({"lora": {"rank": 0}}, "lora.rank:"),
        ({"training": {"sequenceLength": 8}}, "training.sequenceLength:"),
        ({"training": {"precision": "int8"}}, "training.precision:"),
        ({"model": {"id": "x", "path": "/m"}}, "model: exactly one of model.id and model.path"),
        ({"dataset": {"path": "/d.jsonl", "format": "tsv"}}, "dataset.format:"),
        ({"output": {"dir": "/o", "adapterName": "Bad_Name"}}, "output.adapterName:"),
        ({"lora": {"dropout": 0.1}}, "lora.dropout: must be 0 when experts is true"),
        ({"method": "dpo"}, "dataset.format: method dpo needs a dataset with format preference"),
        ({"training": {"epochs": 1, "warmup": 3}}, "training.warmup:"),
    ],
)
def test_bad_values_name_the_field(over, field):
    with pytest.raises(ValidationError) as e:
        TrainerConfig.model_validate(_with(**over))
    assert describe(e.value).startswith(field)


def test_dropout_allowed_without_expert_lora():
    cfg = TrainerConfig.model_validate(_with(lora={"dropout": 0.1, "experts": False}))
    assert cfg.lora.dropout == 0.1


def test_config_module_imports_without_torch():
    code = "import sys, tuneroute_trainer.config; sys.exit(1 if {'torch', 'transformers'} & set(sys.modules) else 0)"
    root = Path(__file__).resolve().parents[2] / "trainer-image"
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
