"""`prefalign data` on the tabular inputs, and the streamed commands against the library."""

from __future__ import annotations

import json

import pytest

from prefalign.cli.main import main
from prefalign.data.audit import audit
from prefalign.data.fingerprint import fingerprint_pairs
from prefalign.data.load import load_pairs

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")

ROWS = [
    {"prompt": "Hello there", "chosen": "A warm and long hello.", "rejected": "Hi."},
    {"prompt": "Second question", "chosen": "x", "rejected": "A much longer answer."},
    {"prompt": "hello   THERE", "chosen": "Another long reply here.", "rejected": "No."},
    {"prompt": "Hello there", "chosen": "A warm and long hello.", "rejected": "Hi."},  # duplicate
    {"prompt": "Empty", "chosen": " ", "rejected": "b"},
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_help_lists_every_input_kind(capsys):
    with pytest.raises(SystemExit):
        main(["data", "validate", "--help"])
    out = capsys.readouterr().out
    for kind in (".parquet", ".csv", "save_to_disk", "DatasetDict", "1-based row", "JSON array or"):
        assert kind in out


def test_validate_parquet_names_file_row_and_field(tmp_path, capsys):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert main(["data", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:5: chosen: empty or whitespace-only response" in out
    assert f"5 record(s) read from {path} [trl]; 3 pair(s) valid; 1 defect(s) in 1 record(s)" in out


def test_validate_a_dataset_dict_folder_asks_for_a_split(tmp_path, capsys):
    folder = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:3])}).save_to_disk(str(folder))
    assert main(["data", "validate", str(folder)]) == 2
    assert f"pass one split's folder, e.g. {folder / 'train'}" in capsys.readouterr().err
    assert main(["data", "validate", str(folder / "train")]) == 0


def test_streamed_audit_json_equals_the_library_audit(tmp_path, capsys):
    train, evaluation = _jsonl(tmp_path / "train.jsonl", ROWS[:4]), _jsonl(tmp_path / "eval.jsonl", ROWS[:1])
    out = tmp_path / "audit.json"
    assert main(["data", "audit", str(train), "--eval", str(evaluation), "--json", str(out)]) == 0
    loaded = load_pairs([train])
    fingerprint = fingerprint_pairs(loaded.pairs, {"preference_axis": "better", "dedupe": True})
    expected = audit(loaded, fingerprint, eval_pairs=load_pairs([evaluation]).pairs)
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(json.dumps(expected.to_dict()))
    assert expected.leakage.leaked_pairs == 2 and expected.duplicate_records_dropped == 1


def test_audit_skip_keeps_eval_rejects_apart_from_training_rejects(tmp_path, capsys):
    train, evaluation = _jsonl(tmp_path / "train.jsonl", ROWS), _jsonl(tmp_path / "eval.jsonl", ROWS[4:])
    rejects = tmp_path / "rejects.jsonl"
    assert main(["data", "audit", str(train), "--eval", str(evaluation), "--on-error", "skip",
                 "--rejects", str(rejects)]) == 0
    err = capsys.readouterr().err
    assert f"warning: eval: skipped 1 invalid record(s) (1 defect(s)); see {tmp_path / 'rejects.eval.jsonl'}" in err
    for path in (rejects, tmp_path / "rejects.eval.jsonl"):
        (row,) = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert row["record"]["prompt"] == "Empty"


def test_convert_a_saved_dataset_and_back(tmp_path, capsys):
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS[:3]).save_to_disk(str(folder))
    out = tmp_path / "ar.jsonl"
    assert main(["data", "convert", str(folder), "--to", "accepted_rejected", "-o", str(out)]) == 0
    assert "wrote 3 pair(s)" in capsys.readouterr().out
    again = load_pairs([out]).pairs
    assert [(p.prompt, p.chosen, p.rejected) for p in again] == [
        (p.prompt, p.chosen, p.rejected) for p in load_pairs([folder]).pairs]


def test_preview_index_out_of_range_counts_the_kept_pairs(tmp_path, capsys):
    path = _jsonl(tmp_path / "p.jsonl", ROWS[:4])
    assert main(["data", "preview", str(path), "--index", "3"]) == 2
    assert f"--index 3 is out of range: {path} has 3 pair(s)" in capsys.readouterr().err
