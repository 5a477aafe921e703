"""Metrics to `run_dir/metrics.jsonl` (one flushed JSON line per call) and TensorBoard events.

A line is {"step": int, "time": unix seconds, "split": "train" | "eval" | ..., metric: value, ...};
NaN and infinite values are written as the strings "nan", "inf", "-inf" (strict JSON).
On resume the lines after the checkpoint's step are dropped first, so a resumed run's file holds
each step once; TensorBoard is told to purge those steps too. Without the `tensorboard` package
the logger warns once and writes JSONL only.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from prefalign.atomic import atomic_open
from prefalign.storage import reporting_storage

METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
_RESERVED = ("step", "time", "split")
_warned_no_tensorboard = False


class MetricsLogger:
    """Append-only metrics log for one run; with `enabled=False` (non-main processes) a no-op.

    `resume_step=None` starts a fresh file (an earlier metrics.jsonl is replaced); an int keeps
    the lines with step <= resume_step and appends after them.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        resume_step: int | None = None,
        enabled: bool = True,
        tensorboard: bool = True,
    ):
        self.path = Path(run_dir) / METRICS
        self.enabled = enabled
        self._file: IO[str] | None = None
        self._writer: Any = None
        self._write_failed = False
        if not enabled:
            return
        with reporting_storage(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is None:
                self._file = open(self.path, "w", encoding="utf-8")
            else:
                _keep_through(self.path, resume_step)
                self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            purge = None if resume_step is None else resume_step + 1
            self._writer = _summary_writer(Path(run_dir) / TENSORBOARD, purge)

    def log(self, step: int, metrics: Mapping[str, Any], *, split: str = "train") -> None:
        """Write one line for `step` and the same scalars to TensorBoard as `split/name`."""
        if not self.enabled:
            return
        if self._file is None:
            raise RuntimeError("MetricsLogger.log called after close()")
        clashes = sorted(set(metrics) & set(_RESERVED))
        if clashes:
            raise ValueError(f"metric names {clashes} are reserved for the line itself")
        values = {name: _plain(value) for name, value in metrics.items()}
        line = {"step": int(step), "time": round(time.time(), 3), "split": split,
                **{name: _json_value(value) for name, value in values.items()}}
        text = json.dumps(line) + "\n"
        self._write_failed = True  # until the line is on its way
        with reporting_storage(self.path, len(text)):
            self._file.write(text)
            self._file.flush()  # a crash loses at most the line being written
        self._write_failed = False
        if self._writer is not None:
            for name, value in values.items():
                if isinstance(value, int | float):  # NaN and inf included: TensorBoard shows them
                    tag = name if "/" in name else f"{split}/{name}"
                    self._writer.add_scalar(tag, value, global_step=int(step))

    def close(self) -> None:
        """Flush and close the files; safe to call twice. After a write that failed (a full
        disk, already raised) the unwritten rest of the line is dropped without a second error."""
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError:
                if not self._write_failed:
                    raise
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_metrics(run_dir: Path) -> list[dict]:
    """The parsed lines of `run_dir/metrics.jsonl` (an unfinished last line is skipped)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [record for _, record in _parsed_lines(path)]


def _keep_through(path: Path, resume_step: int) -> None:
    """Atomically rewrite `path` keeping only well-formed lines with step <= resume_step."""
    if not path.exists():
        return
    kept = [text for text, record in _parsed_lines(path) if record["step"] <= resume_step]
    with atomic_open(path) as handle:
        handle.writelines(kept)


def _parsed_lines(path: Path) -> list[tuple[str, dict]]:
    lines = []
    with open(path, encoding="utf-8") as handle:
        for text in handle:
            try:
                record = json.loads(text)
            except ValueError:  # a line cut short by a crash
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                lines.append((text if text.endswith("\n") else text + "\n", record))
    return lines


def _plain(value: Any) -> Any:
    """Tensors and numpy scalars as Python numbers (via .item())."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _json_value(value: Any) -> Any:
    """NaN and inf as the strings "nan", "inf", "-inf", so that every line is strict JSON."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return value if math.isfinite(value) else str(float(value))
    return str(value)


def _summary_writer(directory: Path, purge_step: int | None) -> Any:
    global _warned_no_tensorboard
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        if not _warned_no_tensorboard:
            warnings.warn(f"TensorBoard events are not written ({error}); metrics go to "
                          f"{METRICS} only. Install the `tensorboard` package to get them.",
                          stacklevel=3)
            _warned_no_tensorboard = True
        return None
    return SummaryWriter(log_dir=str(directory), purge_step=purge_step)
