"""Build tiny on-disk models (random weights + a character tokenizer) and configs for the trainer."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from . import REPO
from .tiny_models import tiny_model

DATA = REPO / "tests" / "trainer" / "data"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def char_tokenizer():
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = sorted(set(string.printable) - set("\t\r\x0b\x0c"))
    vocab = {t: i for i, t in enumerate(specials + chars)}
    assert len(vocab) <= 128
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()  # decode "4", "2" as "42", not "4 2": rewards parse the text
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_model(arch: str, path: Path, seed: int = 0, servable: bool = False) -> Path:
    """A tiny random model and the character tokenizer; `servable`: dimensions vLLM accepts."""
    model = tiny_model(arch, seed=seed, servable=servable)
    model.save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


def trainer_config(model_dir: Path, out_dir: Path, fmt: str = "chat", data: str | None = None, **over) -> dict:
    cfg: dict[str, Any] = {
        "model": {"path": str(model_dir)},
        "dataset": {"path": str(data or DATA / f"{fmt}.jsonl"), "format": fmt},
        "method": "dpo" if fmt == "preference" else "sft",
        "lora": {"rank": 8, "alpha": 16, "targetModules": ["q_proj", "v_proj"], "kernel": "auto"},
        "training": {
            "maxSteps": 30,
            "learningRate": 3e-3,
            "batchSize": 4,
            "sequenceLength": 128,
            "precision": "fp32",
            "seed": 0,
        },
        "checkpoint": {"everySteps": 1000},
        "output": {"dir": str(out_dir), "adapterName": "tiny-adapter"},
    }
    for key, value in over.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    return cfg


def trainer_events(text: str) -> list[dict[str, Any]]:
    """The trainer's JSON event lines ({"event": "progress" | "sharded" | "done" | ...}) in its
    output or a pod's log; any other line is skipped."""
    events = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "event" in value:
            events.append(value)
    return events


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg))
    return path
