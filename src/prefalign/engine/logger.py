"""Metrics to `run_dir/metrics.jsonl` (one flushed JSON line per call) and TensorBoard events.

A line is {"step": int, "time": unix seconds, "split": "train" | "eval" | ..., metric: value, ...};
NaN and infinite values are written as the strings "nan", "inf", "-inf" (strict JSON).
On resume the lines after the checkpoint's step are dropped first, so a resumed run's file holds
each step once; TensorBoard is told to purge those steps too. Without the `tensorboard` package
the logger warns once and writes JSONL only. The same scalars, tagged as in TensorBoard, go to
any experiment trackers it is given (engine/trackers.py: W&B, MLflow), with the manifest.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from prefalign.atomic import atomic_open
from prefalign.storage import reporting_storage

if TYPE_CHECKING:
    from prefalign.engine.trackers import Tracker

METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
_RESERVED = ("step", "time", "split")
_warned_no_tensorboard = False


class MetricsLogger:
    """Append-only metrics log for one run; with `enabled=False` (non-main processes) a no-op.

    `resume_step=None` starts a fresh file (an earlier metrics.jsonl is replaced); an int keeps
    the lines with step <= resume_step and appends after them. `trackers` (opened by the caller)
    receive every numeric metric, the manifests given to `record_manifest` and `close`, and are
    finished by `close`.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        resume_step: int | None = None,
        enabled: bool = True,
        tensorboard: bool = True,
        trackers: Sequence[Tracker] = (),
    ):
        self.path = Path(run_dir) / METRICS
        self.enabled = enabled
        self._file: IO[str] | None = None
        self._writer: Any = None
        self._trackers: list[Tracker] = list(trackers) if enabled else []
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
        scalars = tagged_scalars(values, split)
        if self._writer is not None:
            for tag, value in scalars.items():
                self._writer.add_scalar(tag, value, global_step=int(step))
        for tracker in list(self._trackers):
            self._call(tracker, "log", int(step), scalars)

    def record_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Give the trackers the manifest as it stands (the run's start)."""
        for tracker in list(self._trackers):
            self._call(tracker, "log_manifest", manifest)

    def close(self, manifest: Mapping[str, Any] | None = None) -> None:
        """Flush and close the files, give the trackers the final `manifest` (when there is one)
        and finish them with its outcome; safe to call twice. After a write that failed (a full
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
        for tracker in list(self._trackers):
            if manifest is not None:
                self._call(tracker, "log_manifest", manifest)
            self._call(tracker, "close", None if manifest is None else manifest.get("outcome"))
        self._trackers = []

    def _call(self, tracker: Tracker, method: str, *args: Any) -> None:
        """A tracker that fails (a server gone, a disk full) is warned about and dropped: the run
        goes on, and metrics.jsonl stays its complete record."""
        try:
            getattr(tracker, method)(*args)
        except Exception as error:
            if tracker in self._trackers:
                self._trackers.remove(tracker)
            warnings.warn(f"experiment tracker {tracker.name} failed in {method} "
                          f"({type(error).__name__}: {error}); it gets nothing more from this "
                          "run (metrics.jsonl has everything)", stacklevel=3)

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


def tagged_scalars(values: Mapping[str, Any], split: str) -> dict[str, float]:
    """The numeric metrics as TensorBoard tags: "split/name", or the name when it has a "/"
    already; NaN and inf are kept (TensorBoard and the trackers show them)."""
    return {name if "/" in name else f"{split}/{name}": value
            for name, value in values.items() if isinstance(value, int | float)}


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
