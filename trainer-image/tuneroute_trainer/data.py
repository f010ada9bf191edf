"""Load a dataset (local json/jsonl/parquet or hub id) and map it onto the columns trl expects."""

from __future__ import annotations

from pathlib import Path

from .config import DatasetSource
from .errors import InputError

_EXTENSIONS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}

# columns each format needs; trl's columns are: messages | prompt+completion | text | prompt+chosen+rejected
REQUIRED: dict[str, list[tuple[str, ...]]] = {
    "chat": [("messages",)],
    "instruction": [("instruction", "output")],
    "completion": [("prompt", "completion"), ("text",)],
    "preference": [("prompt", "chosen", "rejected"), ("chosen", "rejected")],
}


def _local_files(path: str) -> tuple[str, list[str]]:
    p = Path(path)
    if not p.exists():
        raise InputError("dataset.path", f"file {path} not found")
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.suffix in _EXTENSIONS)
    if not files:
        raise InputError("dataset.path", f"no .json, .jsonl or .parquet file in {path}")
    kinds = {_EXTENSIONS.get(f.suffix, "") for f in files}
    if "" in kinds or len(kinds) > 1:
        raise InputError("dataset.path", f"{path}: expected only .json/.jsonl or only .parquet files")
    return kinds.pop(), [str(f) for f in files]


def load_rows(src: DatasetSource, token: str | None = None):
    """The dataset in trl's columns for `src.format` (SFT and DPO)."""
    return to_trl_columns(load_raw(src, token), src.format)


def load_raw(src: DatasetSource, token: str | None = None):
    """The dataset as stored, all columns kept."""
    import datasets

    try:
        if src.path is not None:
            builder, files = _local_files(src.path)
            ds = datasets.load_dataset(builder, data_files={src.split: files}, split=src.split)
        else:
            ds = datasets.load_dataset(src.id, split=src.split, token=token)
    except InputError:
        raise
    except Exception as e:  # malformed files, unknown ids, missing splits
        field = "dataset.path" if src.path is not None else "dataset.id"
        raise InputError(field, f"cannot load dataset: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
    return ds


def _instruction_row(row: dict) -> dict:
    prompt = row["instruction"] if not row.get("input") else f"{row['instruction']}\n\n{row['input']}"
    return {"prompt": prompt, "completion": row["output"]}


def to_trl_columns(ds, fmt: str):
    """Check the format's columns are there and rename/derive them to trl's names."""
    cols = set(ds.column_names)
    match = next((need for need in REQUIRED[fmt] if set(need) <= cols), None)
    if match is None:
        wanted = " or ".join("+".join(n) for n in REQUIRED[fmt])
        raise InputError(
            "dataset.format", f"format {fmt!r} needs column(s) {wanted}; found {', '.join(sorted(cols)) or 'none'}"
        )
    if len(ds) == 0:
        raise InputError("dataset", "the dataset has no rows")
    if fmt == "instruction":
        ds = ds.map(_instruction_row, remove_columns=ds.column_names)
    else:
        ds = ds.select_columns(list(match))
    if fmt == "chat":
        bad = next(
            (i for i, m in enumerate(ds["messages"]) if not m or not all("role" in t and "content" in t for t in m)),
            None,
        )
        if bad is not None:
            raise InputError("dataset.format", f"row {bad}: messages must be a non-empty list of {{role, content}}")
    return ds


def split_held_out(ds, n: int, seed: int):
    """(train, held_out or None): `n` rows picked by a seeded shuffle, at most a fifth of the data so
    that small datasets still train on most of their rows."""
    import random

    n = min(n, len(ds) // 5)
    if n <= 0:
        return ds, None
    order = list(range(len(ds)))
    random.Random(seed).shuffle(order)
    return ds.select(sorted(order[n:])), ds.select(sorted(order[:n]))


def prompt_of(row: dict) -> tuple[list[dict] | None, str]:
    """A row's prompt as (chat messages up to the last user turn, or None for a plain prompt) and the
    text the router sees (the newest user turn, or the plain prompt)."""
    if "messages" in row:
        msgs = row["messages"]
        last = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=len(msgs) - 1)
        return msgs[: last + 1], str(msgs[last]["content"])
    prompt = row.get("prompt")
    if isinstance(prompt, list):  # conversational preference rows
        return prompt, str(next((m["content"] for m in reversed(prompt) if m["role"] == "user"), ""))
    if prompt is None:  # plain-text rows: the first half is the prompt
        text = str(row.get("text") or row.get("chosen") or "")
        prompt = text[: max(1, len(text) // 2)]
    return None, str(prompt)
