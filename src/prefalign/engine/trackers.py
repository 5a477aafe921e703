"""Experiment trackers beside metrics.jsonl (`train.report_to`): Weights & Biases and MLflow.

TensorBoard is written by the MetricsLogger itself; the two here are optional extras
(`pip install 'prefalign[wandb]'`, `'prefalign[mlflow]'`). Each receives the metrics under the
names TensorBoard shows ("train/loss", "eval/accuracy"), the resolved config at the start, and
the manifest at the start and again at the end, with the run's outcome. Only the main process
opens them. Their settings come from their own environment variables, so no config file holds
a key or a server address:

- wandb: WANDB_PROJECT (default "prefalign"), WANDB_ENTITY, WANDB_MODE (online, offline,
  disabled), WANDB_DIR (default: the run directory), WANDB_API_KEY. The run is named run.name;
  the manifest is the run file manifest.json.
- mlflow: MLFLOW_TRACKING_URI (mlflow's default is sqlite:///mlflow.db in the working directory,
  which needs the full `mlflow` package; mlflow-skinny works with a tracking server or with a
  file store, `file:PATH` plus MLFLOW_ALLOW_FILE_STORE=true), MLFLOW_EXPERIMENT_NAME (default
  "prefalign"). The config goes in as parameters ("optim.lr") and as config.json, the manifest
  as manifest.json; the run is named run.name.

A resumed run (one that restarts from a checkpoint) continues the same tracker runs, whose ids
are kept in `run_dir/trackers.json` (W&B: `resume="allow"` with the stored id; MLflow: the stored
run id, set back to RUNNING). Steps logged after the checkpoint by the interrupted run are logged
again: metrics.jsonl and TensorBoard drop the old values, MLflow keeps both in the metric's
history, and W&B, which takes no step below the last it holds, keeps the first. Offline, W&B
writes each resumed part as another offline-run directory with the same run id.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from prefalign.atomic import write_json_atomic
from prefalign.config import Config, ConfigError

TRACKERS_FILE = "trackers.json"
DEFAULT_PROJECT = "prefalign"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.json"
# tracker name -> the module it needs (also the name of prefalign's extra)
_MODULES = {"wandb": "wandb", "mlflow": "mlflow"}
_MLFLOW_BATCH = 100  # log_batch takes at most 100 params (and 1000 metrics) per call


class Tracker(Protocol):
    """What the MetricsLogger calls on each tracker."""

    name: str

    def describe(self) -> dict[str, Any]:
        """Where the run went (ids, project): kept in trackers.json and the manifest."""

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record `scalars` (tag -> value) at `step`."""

    def log_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Store the manifest as it is now (replacing an earlier copy)."""

    def close(self, outcome: str | None) -> None:
        """Finish the run; `outcome` is the manifest's (None: ended without one)."""


def check_trackers(names: Sequence[str]) -> None:
    """Import the packages `names` need; raises ConfigError naming the `pip install` to run."""
    for name in names:
        if name in _MODULES:
            _import(name)


def open_trackers(config: Config, run_dir: Path, *, resumed: bool) -> list[Tracker]:
    """Start (or, when `resumed`, continue) a run in each tracker of `train.report_to` besides
    TensorBoard, and record their ids in `run_dir/trackers.json`."""
    names = [name for name in config.train.report_to if name in _MODULES]
    if not names:
        return []
    saved = read_tracker_ids(run_dir) if resumed else {}
    trackers: list[Tracker] = []
    try:
        for name in names:
            trackers.append(_OPENERS[name](config, Path(run_dir), saved.get(name) or {}))
    except BaseException:
        for tracker in trackers:
            tracker.close("failed: another tracker did not start")
        raise
    ids = {**saved, **{tracker.name: tracker.describe() for tracker in trackers}}
    write_json_atomic(ids, Path(run_dir) / TRACKERS_FILE)
    return trackers


def read_tracker_ids(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The tracker runs recorded in `run_dir/trackers.json` ({} when there is none)."""
    path = Path(run_dir) / TRACKERS_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _import(name: str) -> Any:
    module = _MODULES[name]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(f"train.report_to: {name} needs the {module} package, which cannot be "
                          f"imported ({error}); install it with `pip install 'prefalign[{name}]'`, "
                          f"or remove {name} from train.report_to") from None


class WandbTracker:
    """A Weights & Biases run (wandb.init with reinit="create_new": an active run of the caller's
    is left alone)."""

    name = "wandb"

    def __init__(self, config: Config, run_dir: Path, saved: Mapping[str, Any]):
        wandb = _import("wandb")
        run_id = saved.get("id")
        self._run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            name=config.run.name,
            config=config.to_dict(),
            dir=os.environ.get("WANDB_DIR") or str(run_dir),
            id=run_id,
            resume="allow" if run_id else None,
            reinit="create_new",
        )

    def describe(self) -> dict[str, Any]:
        return {"id": self._run.id, "project": self._run.project,
                "mode": str(self._run.settings.mode)}  # online, offline or disabled

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        self._run.log(dict(scalars), step=int(step))

    def log_manifest(self, manifest: Mapping[str, Any]) -> None:
        # A copy in the run's own files directory, uploaded whenever it changes ("live").
        path = Path(self._run.dir) / MANIFEST_FILE
        write_json_atomic(manifest, path)
        self._run.save(str(path), base_path=self._run.dir, policy="live")

    def close(self, outcome: str | None) -> None:
        if outcome is not None:
            self._run.summary["outcome"] = outcome
        self._run.finish(exit_code=0 if _succeeded(outcome) else 1)


class MlflowTracker:
    """An MLflow run, driven through an MlflowClient (nothing is set on mlflow's global active
    run, so a caller's own run is left alone)."""

    name = "mlflow"

    def __init__(self, config: Config, run_dir: Path, saved: Mapping[str, Any]):
        self._client = _mlflow_client()
        self._experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_PROJECT
        experiment_id = self._experiment_id()
        run_id = saved.get("run_id")
        if run_id:  # continue it: params already logged stay as they are (mlflow's are fixed)
            self._client.update_run(run_id, status="RUNNING")
            logged = self._client.get_run(run_id).data.params
        else:
            run_id = self._client.create_run(
                experiment_id, run_name=config.run.name,
                tags={"prefalign.run_dir": str(Path(run_dir).resolve())}).info.run_id
            logged = {}
        self.run_id, self.experiment_id = run_id, experiment_id
        self._log_config(config, logged)

    def _experiment_id(self) -> str:
        found = self._client.get_experiment_by_name(self._experiment)
        return found.experiment_id if found else self._client.create_experiment(self._experiment)

    def _log_config(self, config: Config, logged: Mapping[str, str]) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        params = [Param(key, value) for key, value in flat_params(config.to_dict()).items()
                  if key not in logged and len(value) <= MAX_PARAM_VAL_LENGTH]
        for start in range(0, len(params), _MLFLOW_BATCH):
            self._client.log_batch(self.run_id, params=params[start:start + _MLFLOW_BATCH])
        self._client.log_dict(self.run_id, config.to_dict(), CONFIG_FILE)

    def describe(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "experiment": self._experiment,
                "experiment_id": self.experiment_id,
                "tracking_uri": _without_credentials(self._client.tracking_uri)}

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(tag, float(value), now, int(step)) for tag, value in scalars.items()]
        if metrics:
            self._client.log_batch(self.run_id, metrics=metrics)

    def log_manifest(self, manifest: Mapping[str, Any]) -> None:
        self._client.log_dict(self.run_id, dict(manifest), MANIFEST_FILE)

    def close(self, outcome: str | None) -> None:
        kind = (outcome or "completed").split(":", 1)[0]
        status = "KILLED" if kind == "interrupted" else \
            "FINISHED" if _succeeded(outcome) else "FAILED"
        self._client.set_terminated(self.run_id, status=status)


def _mlflow_client() -> Any:
    """An MlflowClient on MLFLOW_TRACKING_URI (or mlflow's default); a store it cannot open is
    a ConfigError that says what to set."""
    _import("mlflow")
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient()
    except Exception as error:  # mlflow raises several kinds for an unusable store
        raise ConfigError(
            f"train.report_to: mlflow cannot open its tracking store ({error}). Set "
            "MLFLOW_TRACKING_URI to a tracking server (http://HOST:PORT) or to a file store "
            "(file:PATH, with MLFLOW_ALLOW_FILE_STORE=true), or install the full `mlflow` "
            "package for its default sqlite store") from None


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"optim.lr": "1e-05", "data.train": '["a.jsonl"]', ...}: nested keys joined by dots,
    strings as they are, everything else as JSON."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flat_params(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value)
    return flat


def _succeeded(outcome: str | None) -> bool:
    return outcome is None or outcome in ("completed", "early_stopped")


def _without_credentials(uri: str) -> str:
    """The tracking URI without a user:password part, so the manifest holds no secret."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


_OPENERS = {"wandb": WandbTracker, "mlflow": MlflowTracker}
