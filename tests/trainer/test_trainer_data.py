"""Dataset loading: local files and directories, every format mapped onto trl's columns."""

import json

import pytest

from tuneroute_testing.trainer_fixtures import DATA
from tuneroute_trainer.config import DatasetSource
from tuneroute_trainer.data import load_rows
from tuneroute_trainer.errors import InputError


def test_instruction_rows_become_prompt_completion():
    ds = load_rows(DatasetSource(path=str(DATA / "instruction.jsonl"), format="instruction"))
    assert ds.column_names == ["prompt", "completion"]
    first = json.loads((DATA / "instruction.jsonl").read_text().splitlines()[0])
    assert ds[0] == {"prompt": f"{first['instruction']}\n\n{first['input']}", "completion": first["output"]}


def test_directory_of_parquet_files(tmp_path):
    import datasets

    rows = [json.loads(line) for line in (DATA / "preference.jsonl").read_text().splitlines()]
    for i in range(2):
        datasets.Dataset.from_list(rows[i * 10 : (i + 1) * 10]).to_parquet(str(tmp_path / f"part-{i}.parquet"))
    ds = load_rows(DatasetSource(path=str(tmp_path), format="preference"))
    assert len(ds) == 20 and set(ds.column_names) == {"prompt", "chosen", "rejected"}


def test_text_column_is_a_completion_dataset(tmp_path):
    f = tmp_path / "t.json"
    f.write_text(json.dumps([{"text": "hello world", "id": 1}, {"text": "more text", "id": 2}]))
    ds = load_rows(DatasetSource(path=str(f), format="completion"))
    assert ds.column_names == ["text"] and len(ds) == 2


@pytest.mark.parametrize(
    "content, fmt, message",
    [
        ('{"messages": []}\n', "chat", "dataset.format: row 0: messages must be a non-empty list"),
        ('{"prompt": "a", "chosen": "b"}\n', "preference", "dataset.format: format 'preference' needs column(s)"),
        ("not json at all\n", "chat", "dataset.path: cannot load dataset"),
    ],
)
def test_bad_rows_name_the_field(tmp_path, content, fmt, message):
    f = tmp_path / "d.jsonl"
    f.write_text(content)
    with pytest.raises(InputError) as e:
        load_rows(DatasetSource(path=str(f), format=fmt))
    assert str(e.value).startswith(message)


def test_directory_without_data_files(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(InputError, match=r"^dataset.path: no .json, .jsonl or .parquet file in"):
        load_rows(DatasetSource(path=str(tmp_path), format="chat"))
