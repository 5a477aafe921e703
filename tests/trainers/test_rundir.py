"""Nothing half-made: a run that cannot start leaves no directory, a finished run is not
resumed, and a second process on a run directory stops while the first carries on."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from prefalign.data.types import DataError
from prefalign.trainers.dpo.train import train
from prefalign.trainers.loop.rundir import LOCK, RunDirError, RunLock
from run_helpers import tiny_config
from tiny_models import tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


def _run_dir(tmp_path):
    return tmp_path / "runs" / "tiny"


@pytest.mark.parametrize(("content", "error"), [
    ('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{not json\n', DataError),
    ("", DataError),
])
def test_bad_data_leaves_no_run_directory(tmp_path, model_dir, content, error):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with pytest.raises(error):
        train(tiny_config(tmp_path, model_dir, data={"train": [str(bad)]}))
    assert not _run_dir(tmp_path).exists()


def test_a_missing_data_file_leaves_no_run_directory(tmp_path, model_dir):
    with pytest.raises(FileNotFoundError):
        train(tiny_config(tmp_path, model_dir, data={"train": [str(tmp_path / "none.jsonl")]}))
    assert not _run_dir(tmp_path).exists()


def test_a_pickled_only_model_leaves_no_run_directory(tmp_path, model_dir):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for path in model_dir.iterdir():
        if path.is_file() and path.suffix != ".safetensors":
            (pickled / path.name).write_bytes(path.read_bytes())
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded: pickles are never unpickled")
    with pytest.raises(Exception, match="safetensors"):
        train(tiny_config(tmp_path, pickled))
    assert not _run_dir(tmp_path).exists()


def test_a_failed_start_keeps_an_existing_run_directory(tmp_path, model_dir):
    """Only a directory the failed call created is removed; a user's own stays."""
    run_dir = _run_dir(tmp_path)
    run_dir.mkdir(parents=True)
    (run_dir / "notes.txt").write_text("mine")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(DataError):
        train(tiny_config(tmp_path, model_dir, data={"train": [str(bad)]}))
    assert (run_dir / "notes.txt").read_text() == "mine"


def test_resuming_a_finished_run_changes_nothing(tmp_path, model_dir, capsys):
    config = tiny_config(tmp_path, model_dir, train={"max_steps": 2, "eval_every": 2})
    first = train(config)
    run_dir = first.run_dir
    before = {path.name: path.read_bytes() for path in (run_dir / "manifest.json",
                                                        run_dir / "metrics.jsonl")}
    weights = load_file(str(run_dir / "final" / "model.safetensors"))
    again = train(config, resume=True)
    assert "already finished (completed after 2 step(s)); nothing to resume" in \
        capsys.readouterr().out
    assert (again.outcome, again.steps) == ("completed", 2)
    assert again.final_eval == pytest.approx(first.final_eval)
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    reloaded = load_file(str(run_dir / "final" / "model.safetensors"))
    assert all((reloaded[k] == weights[k]).all() for k in weights)


def test_a_second_process_on_the_run_directory_stops_and_the_first_is_unharmed(tmp_path,
                                                                               model_dir):
    """A held lock (another open file description, as another process would hold it) makes
    the second start stop before it touches anything; once released, the run starts."""
    run_dir = _run_dir(tmp_path)
    run_dir.mkdir(parents=True)
    held = RunLock(run_dir).acquire()
    config = tiny_config(tmp_path, model_dir, train={"max_steps": 1})
    with pytest.raises(RunDirError, match=r"in use by another prefalign process \(pid \d+\)"):
        train(config)
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK]  # nothing written
    held.release()
    assert train(config).outcome == "completed"
