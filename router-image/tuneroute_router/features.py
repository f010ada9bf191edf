"""Cheap, pure features of an OpenAI request that hint at how hard it is.

Everything here is deterministic string work (no model), used both at request
time and by the head's training script, so the two never drift apart.

Most features do not depend on the language (length, digits and big numbers,
maths and code symbols, structure, how much of the prompt is a pasted block
behind a short instruction, how much conversation came before). The word lists
cover the common task verbs in about a dozen languages, so "beweise", "démontrer"
or "证明" count like "prove"; the static embedding (classifier.py) does the rest.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


def _words(s: str) -> frozenset[str]:
    return frozenset(s.split())


# Words are matched after lower-casing, one Unicode word scan per request; scripts written
# without spaces (Chinese, Japanese) are matched as substrings of the text instead.
_WORD = re.compile(r"[^\W_][\w+#-]*")
_CODE_WORDS = _words(
    "def class function return import python javascript typescript rust golang java c++ sql regex bash api"
    " algorithm algorithms compile compiler debug refactor async await struct lambda recursion recursive"
    " dataclass int str bool null none self const var let funktion fonction función função функция"
    " алгоритм algoritmo algorithmus algorithme код"
)
_CODE_MARKS = (
    "```",
    "=>",
    "#include",
    "();",
    "{\n",
    "};",
    "!=",
    "==",
    ">>>",
    "    ",
    "函数",
    "代码",
    "算法",
    "関数",
    "コード",
)
_MATH_WORDS = _words(
    "prove proof integral derivative equation equations theorem probability matrix solve lemma polynomial"
    " prime primes modulo optimize optimise expected variance eigenvalue converge converges limit"
    " beweise beweisen beweis integral ableitung gleichung satz wahrscheinlichkeit primzahl"
    " démontrer démontrez prouver preuve dérivée équation théorème probabilité"
    " demuestra demostrar demostración prueba derivada ecuación teorema probabilidad primo"
    " dimostra dimostrare dimostrazione equazione teorema probabilità"
    " prove provar demonstre demonstrar equação teorema probabilidade"
    " докажи докажите доказать доказательство интеграл производная уравнение теорема вероятность"
    " простое матрица 증명 방정식 정리 확률"
)
_MATH_MARKS = (
    "=",
    "^",
    "\\frac",
    "√",
    "∑",
    "∫",
    "$",
    "≤",
    "≥",
    "≠",
    "π",
    "证明",
    "方程",
    "定理",
    "概率",
    "積分",
    "証明",
)
_ARITH = re.compile(r"\d\s*[-+*/×÷]\s*\d")
_BIG_NUMBER = re.compile(r"\d{4,}")
_STEP_WORDS = _words(
    "then finally first second third next afterwards dann zuerst schließlich ensuite puis enfin"
    " luego después primero finalmente poi infine primo depois primeiro потом затем сначала"
)
_STEP_MARKS = (
    "step by step",
    "step-by-step",
    "schritt für schritt",
    "étape par étape",
    "paso a paso",
    "пошагово",
    "一步一步",
    "步骤",
    "ステップ",
)
_LIST_ITEM = re.compile(r"^[ \t]*(?:\d+[.)]|[-*•])[ \t]+", re.MULTILINE)
_CONSTRAINT_WORDS = _words(
    "must without ensure exactly constraint constraints efficient efficiently complexity edge trade-off"
    " trade-offs tradeoff tradeoffs scalable scalability robust guarantee muss ohne genau effizient"
    " doit sans exactement efficace sin exactamente eficiente deve senza esattamente efficiente"
    " должен без ровно эффективно сложность"
)
_CONSTRAINT_MARKS = ("at least", "at most", "should not", "must not", "o(n", "o(log", "必须", "不能", "复杂度", "必ず")
_DEEP_WORDS = _words(
    "why design architect architecture compare analyze analyse evaluate derive implement critique reason"
    " justify plan strategy debug optimize optimise diagnose tradeoffs warum entwerfe entwirf vergleiche"
    " analysiere implementiere herleiten pourquoi concevoir concevez comparer analyser implémenter"
    " por qué porqué diseña diseñar compara analiza implementa implementar perché progetta confronta analizza"
    " implementa por que projete compare analise почему спроектируй сравни проанализируй реализуй"
    " оптимизируй 왜 설계 분석 구현"
)
_DEEP_MARKS = (
    "how would",
    "explain why",
    "walk me through",
    "为什么",
    "设计",
    "分析",
    "实现",
    "优化",
    "なぜ",
    "設計",
    "実装",
    "最適化",
)
# Tasks a small model does well whatever the length of the pasted text.
_EASY_WORDS = _words(
    "translate summarize summarise summary tl;dr count list extract classify sentiment typo typos spelling"
    " grammar proofread rephrase paraphrase rewrite reformat format shorten capitalize sort alphabetically"
    " übersetze übersetzen zusammenfassen fasse zusammenfassung zähle korrigiere rechtschreibung"
    " traduire traduis résume résumer compte corrige orthographe"
    " traduce traducir resume resumir resumen cuenta corrige ortografía"
    " traduci riassumi conta correggi traduza resuma resumir conte corrija"
    " переведи перевести кратко перескажи посчитай исправь орфографию"
)
_EASY_MARKS = ("翻译", "总结", "摘要", "翻訳", "要約", "校正", "번역", "요약")
_SIMPLE_Q = re.compile(
    r"^\s*(hi|hello|hey|thanks|thank you|what is|what's|who is|who was|when (is|was|did)|where is"
    r"|define|translate|how many|how do you spell|name|hallo|danke|was ist|wer ist|wo ist|bonjour|merci"
    r"|qu'est-ce que|qui est|où est|hola|gracias|qué es|quién es|dónde está|ciao|grazie|cos'è|olá|obrigad"
    r"|o que é|привет|спасибо|что такое|кто такой|где находится|你好|谢谢|什么是|こんにちは|ありがとう)",
    re.IGNORECASE,
)
# A short follow-up that leans on the conversation ("now prove it", "same for n=5").
_FOLLOWUP = re.compile(
    r"\b(it|that|this|same|again|now|instead|also|above|previous|es|das|dies|nochmal|jetzt|ça|cela|même"
    r"|maintenant|eso|esto|mismo|ahora|questo|stesso|ora|isso|mesmo|agora|это|то же|теперь|ещё)\b"
    r"|这个|那个|同样|现在|それ|同じ|今度",
    re.IGNORECASE,
)
_QUESTION_MARKS = ("?", "？", "؟")
_LETTER = re.compile(r"[^\W\d_]")
_NON_ASCII_LETTER = re.compile(r"[^\W\d_a-zA-Z]")
_DIGIT = re.compile(r"\d")
# Language-independent load: answer options to weigh, distinct names and numbers to keep track of.
_OPTION = re.compile(r"^[ \t]*(?:[-*•]|\(?[a-hA-H][.)])[ \t]+\S", re.MULTILINE)
_NAME = re.compile(r"\b[A-Z][a-z]{2,}")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")

FEATURE_NAMES = (
    "log_chars",
    "turns",
    "code",
    "math",
    "steps",
    "constraints",
    "deep_q",
    "simple_q",
    "questions",
    "lines",
    "tools",
    "system",
    "non_ascii",
    "digits",
    "big_numbers",
    "easy_task",
    "log_instruction_chars",
    "pasted_block",
    "log_context_chars",
    "context_hard",
    "followup",
    "options",
    "names",
    "numbers",
    "short_hard",
    "paste_easy",
    "paste_hard",
)


@dataclass(frozen=True)
class RequestView:
    """What routing needs from a request body, extracted once."""

    text: str  # the newest user turn: what the classifier reads
    all_chars: int  # every message's text, for the context-window check
    turns: int
    has_system: bool
    has_tools: bool
    has_images: bool
    context: str = ""  # earlier user turns, oldest first (capped): difficulty carries over


_CONTEXT_CHARS = 1500  # the end of the earlier user turns is enough to carry the topic


def _content_text(content: object) -> tuple[str, bool]:
    """Text of a message's content (string or parts list) and whether it holds an image."""
    if isinstance(content, str):
        return content, False
    if isinstance(content, list):
        texts, image = [], False
        for part in content:
            if isinstance(part, dict):
                kind = part.get("type")
                if kind == "text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif kind in ("image_url", "input_image", "image"):
                    image = True
        return "\n".join(texts), image
    return "", False


def view_chat(body: dict) -> RequestView:
    messages = body.get("messages") or []
    user_turns: list[str] = []
    chars, system, images = 0, False, False
    for m in messages:
        if not isinstance(m, dict):
            continue
        text, img = _content_text(m.get("content"))
        chars += len(text)
        images |= img
        role = m.get("role")
        if role == "user":
            user_turns.append(text)
        elif role in ("system", "developer"):
            system = True
    has_tools = bool(body.get("tools") or body.get("functions"))
    last = user_turns[-1] if user_turns else ""
    context = "\n".join(user_turns[:-1])[-_CONTEXT_CHARS:]
    return RequestView(last, chars, len(user_turns), system, has_tools, images, context)


def view_completion(body: dict) -> RequestView:
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = "\n".join(p for p in prompt if isinstance(p, str))
    text = prompt if isinstance(prompt, str) else ""
    return RequestView(text, len(text), 1, False, False, False)


_WINDOW = (800, 400)  # regexes read the head and tail only: cost stays flat (p99 < 2 ms) for huge prompts


def _window(text: str) -> str:
    head, tail = _WINDOW
    return text if len(text) <= head + tail else text[:head] + "\n" + text[-tail:]


_KINDS = (_CODE_WORDS, _MATH_WORDS, _STEP_WORDS, _CONSTRAINT_WORDS, _DEEP_WORDS, _EASY_WORDS)
_KIND_OF: dict[str, tuple[int, ...]] = {}
for _k, _vocab in enumerate(_KINDS):
    for _w in _vocab:
        _KIND_OF[_w] = (*_KIND_OF.get(_w, ()), _k)


def _word_kinds(words: list[str]) -> list[int]:
    """How many of the words fall in each word list of _KINDS: one dict look-up a word."""
    counts = [0] * len(_KINDS)
    for w in words:
        for k in _KIND_OF.get(w, ()):
            counts[k] += 1
    return counts


def _hits(low: str, words: list[str], vocab: frozenset, marks: tuple) -> int:
    return sum(w in vocab for w in words) + sum(low.count(m) for m in marks)


def instruction(text: str) -> str:
    """The instruction around a pasted block: the shorter of the first and last paragraph (or line)."""
    paras = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    if len(paras) < 2:
        lines = [x for x in text.strip().splitlines() if x.strip()]
        if len(lines) < 2:
            return text
        paras = [lines[0], lines[-1]]
    return min(paras[0], paras[-1], key=len)


PASTE_MIN_CHARS, PASTE_MAX_INSTRUCTION = 800, 300


def pasted_instruction(text: str) -> str | None:
    """The short instruction of a long pasted block ("summarise this: <article>"), else None.

    Such a request is as hard as its instruction, not as long as its paste, so the head
    reads the instruction's embedding for it (classifier.py)."""
    if len(text) < PASTE_MIN_CHARS:
        return None
    instr = instruction(_window(text))
    return instr if len(instr) <= PASTE_MAX_INSTRUCTION else None


def _hardness(low: str, words: list[str]) -> int:
    return (
        _hits(low, words, _MATH_WORDS, _MATH_MARKS)
        + _hits(low, words, _DEEP_WORDS, _DEEP_MARKS)
        + _hits(low, words, _CODE_WORDS, _CODE_MARKS)
    )


def features(v: RequestView) -> list[float]:
    """Feature vector in FEATURE_NAMES order, each roughly in [0, 1]."""
    n = len(v.text)
    t = _window(v.text)
    low = t.lower()
    words = _WORD.findall(low)
    letters = len(_LETTER.findall(t)) or 1
    non_ascii = 0.0 if t.isascii() else len(_NON_ASCII_LETTER.findall(t)) / letters
    digits = len(_DIGIT.findall(t)) / max(len(t), 1)
    instr = len(instruction(t))
    ctx = v.context[-_CONTEXT_CHARS:].lower()
    ctx_words = _WORD.findall(ctx)
    code_w, math_w, step_w, constraint_w, deep_w, easy_w = _word_kinds(words)
    math_hits = math_w + sum(low.count(m) for m in _MATH_MARKS) + len(_ARITH.findall(low))
    deep_hits = deep_w + sum(low.count(m) for m in _DEEP_MARKS)
    constraint_hits = constraint_w + sum(low.count(m) for m in _CONSTRAINT_MARKS)
    pasted = n >= PASTE_MIN_CHARS and instr <= PASTE_MAX_INSTRUCTION
    ilow = instruction(t).lower() if pasted else ""
    iwords = _WORD.findall(ilow)
    return [
        min(math.log1p(n) / 8.0, 1.5),
        min((v.turns - 1) / 4.0, 1.0) if v.turns > 1 else 0.0,
        min((code_w + sum(low.count(m) for m in _CODE_MARKS)) / 3.0, 1.0),
        min(math_hits / 3.0, 1.0),
        min((step_w + sum(low.count(m) for m in _STEP_MARKS) + len(_LIST_ITEM.findall(t))) / 3.0, 1.0),
        min(constraint_hits / 3.0, 1.0),
        min(deep_hits / 2.0, 1.0),
        1.0 if n < 120 and _SIMPLE_Q.search(t) else 0.0,
        min(sum(t.count(q) for q in _QUESTION_MARKS) / 3.0, 1.0),
        min(t.count("\n") / 10.0, 1.0),
        1.0 if v.has_tools else 0.0,
        1.0 if v.has_system else 0.0,
        non_ascii,
        min(digits * 5.0, 1.0),
        min(len(_BIG_NUMBER.findall(t)) / 2.0, 1.0),
        min((easy_w + sum(low.count(m) for m in _EASY_MARKS)) / 2.0, 1.0),
        min(math.log1p(instr) / 8.0, 1.5),
        1.0 if pasted else 0.0,
        min(math.log1p(len(v.context)) / 8.0, 1.0),
        min(_hardness(ctx, ctx_words) / 4.0, 1.0) if ctx else 0.0,
        1.0 if ctx and n < 160 and (_FOLLOWUP.search(t) or n < 40) else 0.0,
        min(len(_OPTION.findall(t)) / 5.0, 1.0),
        min(len(set(_NAME.findall(t))) / 10.0, 1.0),
        min(len(set(_NUMBER.findall(t))) / 8.0, 1.0),
        min((math_hits + deep_hits + constraint_hits) / 2.0, 1.0) if n < 200 else 0.0,  # short but hard
        min(_hits(ilow, iwords, _EASY_WORDS, _EASY_MARKS), 1) if pasted else 0.0,  # long but easy
        min(_hardness(ilow, iwords) / 2.0, 1.0) if pasted else 0.0,
    ]


def estimate_tokens(v: RequestView) -> int:
    """Rough prompt token count (about 4 characters a token), for the context-window check."""
    return v.all_chars // 4 + 4 * max(v.turns, 1)
