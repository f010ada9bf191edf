"""Labelled prompts for the complexity head: three difficulty levels, source-disjoint splits.

Level (tier) 1 = a small model answers well, 2 = needs a mid-size model, 3 = needs the strongest.

- data/prompts.jsonl.gz (built by build_dataset.py from packages, committed): BIG-bench tasks
  graded per subtask, HumanEval with measured pass rates of three real models, MT-Bench
  (first turns, and second turns with their context), LiteLLM's router eval cases. Each row
  says its split; the test split's sources are never in training.
- written_prompts.tsv and written_multilingual.tsv (this folder): prompts written for
  tuneroute, training only.
- Multi-turn training conversations composed from training prompts: a prompt, then either a
  follow-up that leans on it (same level as the prompt) or an unrelated new prompt (its own
  level). The follow-ups are FOLLOW_UPS below; test conversations are MT-Bench's own.

splits() returns train / calibration (20% of the training sources' rows, stratified, for
choosing L2 and Platt scaling) / test. Deterministic.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
PROMPTS = HERE / "data" / "prompts.jsonl.gz"
SEED = 20261128

FOLLOW_UPS = (
    "now prove it",
    "do the same for n = 5",
    "why does that work?",
    "can you make it faster?",
    "explain the second step in more detail",
    "what if the input is empty?",
    "now write unit tests for it",
    "and what is the complexity of that?",
    "generalise it to k dimensions",
    "are you sure? check it again",
    "jetzt beweise es",
    "und für n = 10?",
    "et maintenant en O(n) ?",
    "pourquoi ?",
    "¿y si la lista está vacía?",
    "ahora hazlo más eficiente",
    "а теперь докажи это",
    "почему это работает?",
    "那如果 n = 5 呢？",
    "请证明这一点",
    "では、それを証明してください",
    "e se fosse negativo?",
)

# Slices the benchmark reports, by task (besides length and turns, which are measured).
NON_ENGLISH_TASKS = {
    "hindi_question_answering",
    "kannada",
    "persian_idioms",
    "english_russian_proverbs",
    "salient_translation_error_detection",
    "gem/mlsum_de",
    "gem/mlsum_es",
}
MATH_TASKS = {
    "elementary_math_qa/question_only",
    "chinese_remainder_theorem",
    "identify_math_theorems",
    "unit_interpretation/lv0",
    "unit_interpretation/lv3",
    "mtbench:math",
}
CODE_TASKS = {"humaneval", "code_line_description", "dyck_languages", "mtbench:coding"}


@dataclass(frozen=True)
class Example:
    messages: tuple[tuple[str, str], ...]  # (role, content), the newest user turn last
    tier: int
    source: str
    task: str
    label: str  # how the tier was set: measured | graded | category | written | composed
    measured: dict = field(default_factory=dict, compare=False)  # model -> pass rate (measured rows)

    @property
    def text(self) -> str:
        return self.messages[-1][1]

    def body(self) -> dict:
        return {"model": "auto", "messages": [{"role": r, "content": c} for r, c in self.messages]}


def _row(r: dict) -> Example:
    msgs = tuple((m["role"], m["content"]) for m in r["messages"])
    return Example(msgs, r["tier"], r["source"], r["task"], r["label"], r.get("measured") or {})


def packaged() -> tuple[list[Example], list[Example]]:
    rows = [json.loads(x) for x in gzip.decompress(PROMPTS.read_bytes()).decode().splitlines() if x.strip()]
    return [_row(r) for r in rows if r["split"] == "train"], [_row(r) for r in rows if r["split"] == "test"]


def written() -> list[Example]:
    out = []
    for line in (HERE / "written_prompts.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            label, text = line.split("\t", 1)
            out.append(Example((("user", text),), 1 if label == "E" else 3, "written", "written", "written"))
    for line in (HERE / "written_multilingual.tsv").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            tier, text = line.split("\t", 1)
            out.append(Example((("user", text),), int(tier), "written", "written-multilingual", "written"))
    return out


def composed(train: list[Example], n: int = 500) -> list[Example]:
    """Two-turn conversations from training prompts (see the module docstring)."""
    rng = random.Random(SEED + 1)
    singles = [e for e in train if len(e.messages) == 1 and len(e.text) < 3000]
    out = []
    for i in range(n):
        first = rng.choice(singles)
        if i % 5 < 3:  # a follow-up inherits the conversation's level
            last, tier = rng.choice(FOLLOW_UPS), first.tier
        else:  # a new, unrelated request has its own
            nxt = rng.choice(singles)
            last, tier = nxt.text, nxt.tier
        msgs = (("user", first.text), ("assistant", "(answer)"), ("user", last))
        out.append(Example(msgs, tier, first.source, "composed", "composed"))
    return out


# Tasks a small model does well however long the pasted text (long-but-easy), in several
# languages. Written for tuneroute; none is taken from a test source.
EASY_PASTE_INSTRUCTIONS = (
    "Give me a short summary of the text below.",
    "TL;DR of this, please:",
    "Fix the spelling mistakes in the following text and return it.",
    "Translate the following text into French.",
    "List every person's name that appears in this text.",
    "Suggest a title for this text.",
    "Rewrite this in a more formal tone:",
    "Turn the following into a bulleted list of its main points.",
    "What is this text about? Answer in one sentence.",
    "How many paragraphs does the following text have?",
    "Extract all the dates and numbers mentioned below.",
    "Is the tone of this text positive or negative?",
    "Fasse den Text unten kurz zusammen.",
    "Korrigiere die Tippfehler in diesem Text:",
    "Résume ce texte en quelques phrases :",
    "Traduis ce texte en anglais :",
    "Haz un resumen breve del texto siguiente:",
    "Traduce este texto al alemán:",
    "Fai un breve riassunto di questo testo:",
    "Faça um resumo curto do texto abaixo:",
    "Сделай краткое содержание этого текста:",
    "请用两句话概括下面的内容：",
    "次の文章の要点を箇条書きにしてください：",
    "다음 글의 제목을 지어 주세요:",
)


def composed_pastes(train: list[Example], n: int = 300) -> list[Example]:
    """Long pasted blocks (training texts of one source, joined) behind a short instruction.

    An easy instruction (EASY_PASTE_INSTRUCTIONS) makes the request level 1 whatever the
    paste; a short training prompt in front of a paste keeps its own level. So the head
    learns that a paste is as hard as what is asked of it (long-but-easy), not as long as it is.
    """
    rng = random.Random(SEED + 2)
    by_source: dict[str, list[Example]] = {}
    for e in train:
        if len(e.messages) == 1 and 80 <= len(e.text) < 3000:
            by_source.setdefault(e.source, []).append(e)
    sources = sorted(by_source)
    asks = [e for e in train if len(e.messages) == 1 and len(e.text) < 200]
    out = []
    for i in range(n):
        src = rng.choice(sources)
        parts: list[str] = []
        while sum(map(len, parts)) < rng.choice((900, 1500, 3000)):
            parts.append(rng.choice(by_source[src]).text)
        paste = "\n\n".join(parts)
        if i % 5 < 3:
            ask, tier = rng.choice(EASY_PASTE_INSTRUCTIONS), 1
        else:
            other = rng.choice(asks)
            ask, tier = other.text, other.tier
        sep = rng.choice(("\n\n", "\n"))
        text = ask + sep + paste if i % 4 else paste + sep + ask
        out.append(Example((("user", text),), tier, src, "composed-paste", "composed"))
    return out


def splits(cal_frac: float = 0.2) -> tuple[list[Example], list[Example], list[Example]]:
    train_rows, test = packaged()
    pool = train_rows + written()
    groups: dict[tuple, list[Example]] = {}
    for e in pool:
        groups.setdefault((e.source, e.tier), []).append(e)
    rng = random.Random(SEED)
    train, cal = [], []
    for key in sorted(groups):
        g = groups[key][:]
        rng.shuffle(g)
        k = round(len(g) * cal_frac)
        cal += g[:k]
        train += g[k:]
    return (
        train + composed(train) + composed_pastes(train),
        cal + composed(cal, 120) + composed_pastes(cal, 70),
        test,
    )


def slices(e: Example) -> list[str]:
    """The benchmark slices a test example belongs to."""
    out = []
    n = len(e.text)
    if n < 200:
        out.append("short")
    if n >= 1000:
        out.append("long")
    if sum(r == "user" for r, _ in e.messages) > 1:
        out.append("multi-turn")
    letters = [c for c in e.text if c.isalpha()]
    if e.task in NON_ENGLISH_TASKS or (letters and sum(not c.isascii() for c in letters) / len(letters) > 0.3):
        out.append("non-English")
    if e.task in CODE_TASKS:
        out.append("code")
    if e.task in MATH_TASKS:
        out.append("math")
    return out
