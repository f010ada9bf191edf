"""GRPO prompts: a `prompt` column (text or chat messages) from any prompt-bearing format. The other columns
(reference answers, an `output` or `completion` column) are kept: trl hands them to the reward functions."""

from __future__ import annotations

from ..errors import InputError

PROMPT_COLUMNS = {"chat": "messages", "instruction": "instruction", "completion": "prompt"}


def _chat_prompt(row: dict) -> dict:
    messages = list(row["messages"])
    while messages and messages[-1].get("role") == "assistant":  # a worked answer is not part of the prompt
        messages.pop()
    return {"prompt": messages}


def _instruction_prompt(row: dict) -> dict:
    return {"prompt": row["instruction"] if not row.get("input") else f"{row['instruction']}\n\n{row['input']}"}


def to_prompts(ds, fmt: str):
    """Map a loaded dataset onto a `prompt` column, keeping every other column."""
    need = PROMPT_COLUMNS.get(fmt)
    if need is None:
        raise InputError("dataset.format", f"method grpo needs prompts; format {fmt!r} has none")
    if need not in ds.column_names:
        found = ", ".join(sorted(ds.column_names)) or "none"
        raise InputError("dataset.format", f"format {fmt!r} needs a column {need} for grpo; found {found}")
    if len(ds) == 0:
        raise InputError("dataset", "the dataset has no rows")
    if fmt == "chat":
        ds = ds.map(_chat_prompt, remove_columns=["messages"])
        if any(not m for m in ds["prompt"]):
            bad = next(i for i, m in enumerate(ds["prompt"]) if not m)
            raise InputError("dataset.format", f"row {bad}: no user message left once assistant turns are removed")
    elif fmt == "instruction":
        ds = ds.map(_instruction_prompt, remove_columns=[c for c in ("instruction", "input") if c in ds.column_names])
    return ds
