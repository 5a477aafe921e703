"""MetricsLogger: flushed JSONL lines, resume without duplicates, TensorBoard, disabled ranks."""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch

from prefalign.engine import logger as logger_module
from prefalign.engine.logger import MetricsLogger, read_metrics


def _lines(run_dir) -> list[dict]:
    return [json.loads(text) for text in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_lines_are_flushed_as_written(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    log.log(1, {"loss": torch.tensor(0.5), "reward_accuracy": 0.75})
    # Readable before close: each line is flushed.
    (line,) = _lines(tmp_path)
    assert line["step"] == 1 and line["split"] == "train"
    assert line["loss"] == 0.5 and line["reward_accuracy"] == 0.75
    assert isinstance(line["time"], float)
    log.log(2, {"loss": float("nan"), "grad_norm": float("inf")}, split="eval")
    log.close()
    log.close()  # idempotent
    second = _lines(tmp_path)[1]
    assert second["split"] == "eval" and second["loss"] == "nan" and second["grad_norm"] == "inf"
    with pytest.raises(RuntimeError, match="close"):
        log.log(3, {"loss": 1.0})


def test_reserved_names_are_refused(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log, pytest.raises(ValueError, match="step"):
        log.log(1, {"step": 3})


def test_resume_drops_lines_after_the_checkpoint(tmp_path):
    """Steps 1-5 logged, crash mid-line, resume from step 3: steps 1-3 kept, then 4-5 anew."""
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        for step in range(1, 6):
            log.log(step, {"loss": float(step)})
            if step == 3:
                log.log(step, {"loss": 0.1}, split="eval")
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 6, "loss"')  # a line cut short by a crash
    with MetricsLogger(tmp_path, resume_step=3, tensorboard=False) as log:
        for step in (4, 5):
            log.log(step, {"loss": step * 10.0})
    records = read_metrics(tmp_path)
    assert [(r["step"], r["split"]) for r in records] == [
        (1, "train"), (2, "train"), (3, "train"), (3, "eval"), (4, "train"), (5, "train")]
    assert [r["loss"] for r in records[-2:]] == [40.0, 50.0]
    assert not list(tmp_path.glob(".metrics.jsonl.*"))


def test_fresh_start_replaces_an_old_file(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 9, "loss": 1.0}\n')
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(1, {"loss": 2.0})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]


def test_disabled_logger_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    with MetricsLogger(run_dir, enabled=False) as log:
        log.log(1, {"loss": 1.0})
    assert not run_dir.exists()


def test_tensorboard_events_and_purge_on_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLogger(tmp_path) as log:
        for step in range(1, 5):
            log.log(step, {"loss": float(step)})
        log.log(4, {"eval/loss": 0.5}, split="eval")
    _as_an_earlier_run(tmp_path / "tensorboard")
    with MetricsLogger(tmp_path, resume_step=2) as log:
        log.log(3, {"loss": 30.0})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "eval/loss"}
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [
        (1, 1.0), (2, 2.0), (3, 30.0)]


def test_without_tensorboard_warns_once_and_keeps_jsonl(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    monkeypatch.setattr(logger_module, "_warned_no_tensorboard", False)
    with pytest.warns(UserWarning, match="tensorboard"):
        first = MetricsLogger(tmp_path / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        with MetricsLogger(tmp_path / "b") as second:
            second.log(1, {"loss": 1.0})
    first.log(1, {"loss": 1.0})
    first.close()
    assert read_metrics(tmp_path / "a")[0]["loss"] == 1.0
    assert not (tmp_path / "a" / "tensorboard").exists()


def _as_an_earlier_run(directory):
    """Date the event files back a second. TensorBoard reads files in name order
    (events.out.tfevents.SECONDS.HOST.PID.COUNTER): a resumed run is a later process, but two
    writers of one test process in the same second sort by a counter, where "10" < "9"."""
    for path in directory.glob("events.out.tfevents.*"):
        events, out, tfevents, seconds, rest = path.name.split(".", 4)
        path.rename(path.with_name(f"{events}.{out}.{tfevents}.{int(seconds) - 1}.{rest}"))
