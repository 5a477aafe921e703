"""train.report_to: tiny runs logged to W&B (offline mode) and MLflow (a file store under tmp),
read back with the trackers' own formats and clients; resume continues the same tracker run; a
missing extra names the pip install; no network call is made."""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import time

import pytest

from prefalign.config import ConfigError
from prefalign.engine.logger import MetricsLogger, read_metrics
from prefalign.engine.manifest import read_manifest
from prefalign.engine.trackers import TRACKERS_FILE, _without_credentials, flat_params
from prefalign.trainers.dpo.train import train
from run_helpers import tiny_config
from tiny_models import tiny_model_dir
from wandb_records import offline_runs, read_offline_run

pytest.importorskip("wandb")
pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """W&B offline under tmp_path/wandb-dir, MLflow on a file store under tmp_path/mlruns, their
    telemetry off; any connection this process opens beyond loopback is refused and recorded."""
    wandb_dir, mlruns = tmp_path / "wandb-dir", tmp_path / "mlruns"
    wandb_dir.mkdir()
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true",
                        "WANDB_DIR": str(wandb_dir), "WANDB_ERROR_REPORTING": "false",
                        "MLFLOW_TRACKING_URI": mlruns.as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true",
                        "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}.items():
        monkeypatch.setenv(name, value)
    for name in ("WANDB_PROJECT", "WANDB_API_KEY", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    attempts: list[object] = []
    connect = socket.socket.connect

    def local_only(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            attempts.append(address)
            raise OSError(f"tests allow no network connection ({address})")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    return {"wandb_dir": wandb_dir, "mlruns": mlruns, "attempts": attempts}


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _flushed_offline_runs(wandb_dir, run_id: str) -> list:
    """The run's offline-run directories once wandb's service has written everything: run.finish
    returns before the service flushes the transaction log; stopping the service flushes it."""
    import wandb

    wandb.teardown()
    return offline_runs(wandb_dir, run_id)


def _logged(run_dir, split: str, name: str) -> dict[int, float]:
    return {line["step"]: line[name] for line in read_metrics(run_dir)
            if line["split"] == split and name in line}


def test_wandb_offline_run_has_the_metrics_config_and_manifest(tmp_path, model_dir, offline):
    config = tiny_config(tmp_path, model_dir, train={"max_steps": 4, "eval_every": 2,
                                                     "report_to": ["wandb"]})
    result = train(config)
    run_id = json.loads((result.run_dir / TRACKERS_FILE).read_text())["wandb"]["id"]
    (directory,) = _flushed_offline_runs(offline["wandb_dir"], run_id)
    recorded = read_offline_run(directory)
    history = {row["_step"]: row for row in recorded.history}
    assert {step: row["train/loss"] for step, row in history.items()} == \
        pytest.approx(_logged(result.run_dir, "train", "loss"))
    assert {step: row["eval/accuracy"] for step, row in history.items()
            if "eval/accuracy" in row} == pytest.approx(_logged(result.run_dir, "eval", "accuracy"))
    assert sorted(history) == [1, 2, 3, 4]
    assert recorded.config == config.to_dict()
    assert recorded.summary["outcome"] == "completed" and recorded.exit_code == 0
    assert "manifest.json" in recorded.files
    saved = json.loads((directory / "files" / "manifest.json").read_text())
    assert saved == read_manifest(result.run_dir) and saved["outcome"] == "completed"
    assert read_manifest(result.run_dir)["trackers"]["wandb"]["mode"] == "offline"
    assert not (result.run_dir / "tensorboard").exists()  # not asked for
    assert offline["attempts"] == []


def test_mlflow_file_store_has_the_metrics_params_and_manifest(tmp_path, model_dir, offline):
    from mlflow.tracking import MlflowClient

    config = tiny_config(tmp_path, model_dir, train={"max_steps": 4, "eval_every": 2,
                                                     "report_to": ["tensorboard", "mlflow"]})
    result = train(config)
    client = MlflowClient(tracking_uri=offline["mlruns"].as_uri())
    experiment = client.get_experiment_by_name("prefalign")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert {m.step: m.value for m in loss} == pytest.approx(_logged(result.run_dir, "train", "loss"))
    accuracy = client.get_metric_history(run.info.run_id, "eval/accuracy")
    assert {m.step: m.value for m in accuracy} == \
        pytest.approx(_logged(result.run_dir, "eval", "accuracy"))
    assert run.data.params["optim.lr"] == "0.001" and run.data.params["loss.params.beta"] == "0.1"
    assert run.data.params["train.report_to"] == '["tensorboard", "mlflow"]'
    artifacts = offline["mlruns"] / experiment.experiment_id / run.info.run_id / "artifacts"
    assert json.loads((artifacts / "config.json").read_text()) == config.to_dict()
    manifest = json.loads((artifacts / "manifest.json").read_text())
    assert manifest == read_manifest(result.run_dir) and manifest["outcome"] == "completed"
    assert manifest["trackers"]["mlflow"]["run_id"] == run.info.run_id
    assert (result.run_dir / "tensorboard").is_dir()
    assert offline["attempts"] == []


def test_a_resumed_run_continues_the_same_tracker_runs(tmp_path, model_dir, offline):
    from mlflow.tracking import MlflowClient

    sections = dict(data={"eval": []})
    trackers = ["wandb", "mlflow"]
    first = train(tiny_config(tmp_path, model_dir, train={"max_steps": 2, "report_to": trackers},
                              **sections))
    ids = json.loads((first.run_dir / TRACKERS_FILE).read_text())
    longer = tiny_config(tmp_path, model_dir, train={"max_steps": 4, "report_to": trackers},
                         **sections)
    # wandb names an offline part by its start time to the second (offline-run-DATE_HHMMSS-ID):
    # a resume starting within the same second as the first part would share its directory.
    time.sleep(1.1)
    result = train(longer, resume=True)
    assert json.loads((result.run_dir / TRACKERS_FILE).read_text()) == ids
    client = MlflowClient(tracking_uri=offline["mlruns"].as_uri())
    run_id = ids["mlflow"]["run_id"]
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert sorted(steps) == [1, 2, 3, 4]
    assert client.get_run(run_id).info.status == "FINISHED"
    parts = _flushed_offline_runs(offline["wandb_dir"], ids["wandb"]["id"])
    assert [[row["_step"] for row in read_offline_run(part).history] for part in parts] == \
        [[1, 2], [3, 4]]
    assert offline["attempts"] == []


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_missing_extra_names_the_pip_install(tmp_path, model_dir, monkeypatch, tracker):
    monkeypatch.setitem(sys.modules, tracker, None)  # `import wandb` now raises ImportError
    config = tiny_config(tmp_path, model_dir, train={"report_to": [tracker]})
    with pytest.raises(ConfigError, match=rf"pip install 'prefalign\[{tracker}\]'"):
        train(config)
    assert not (tmp_path / "runs" / "tiny").exists()  # refused before anything was written


def test_unknown_trackers_are_refused_naming_the_key(tmp_path, model_dir):
    with pytest.raises(ConfigError, match=r"train\.report_to\[1\]: must be one of"):
        tiny_config(tmp_path, model_dir, train={"report_to": ["tensorboard", "none"]})


def test_no_trackers_writes_metrics_jsonl_only(tmp_path, model_dir):
    config = tiny_config(tmp_path, model_dir, train={"max_steps": 1, "report_to": []},
                         data={"eval": []})
    result = train(config)
    assert len(read_metrics(result.run_dir)) == 1
    assert not (result.run_dir / "tensorboard").exists()
    assert not (result.run_dir / TRACKERS_FILE).exists()
    assert read_manifest(result.run_dir)["trackers"] == {}


def test_flat_params_joins_keys_and_writes_json():
    assert flat_params({"optim": {"lr": 1e-05, "betas": [0.9, 0.999]}, "run": {"name": "x"},
                        "loss": {"params": {}}, "model": {"adapter": None}}) == {
        "optim.lr": "1e-05", "optim.betas": "[0.9, 0.999]", "run.name": "x",
        "loss.params": "{}", "model.adapter": "null"}


def test_tracking_uri_loses_its_credentials():
    assert _without_credentials("https://me:secret@mlflow.example:5000/x") == \
        "https://mlflow.example:5000/x"
    assert _without_credentials("file:///tmp/mlruns") == "file:///tmp/mlruns"



def test_a_failing_tracker_is_dropped_and_the_run_goes_on(tmp_path, offline):
    """The MLflow store disappears mid-run (as a server can): a warning, and metrics.jsonl goes
    on; closing the logger does not fail either."""
    import shutil

    from prefalign.config import config_from_dict
    from prefalign.engine.trackers import open_trackers

    config = config_from_dict({"train": {"report_to": ["mlflow"]}})
    log = MetricsLogger(tmp_path, tensorboard=False,
                        trackers=open_trackers(config, tmp_path, resumed=False))
    log.log(1, {"loss": 0.5})
    shutil.rmtree(offline["mlruns"])
    with pytest.warns(UserWarning, match="mlflow failed in log"):
        log.log(2, {"loss": 0.4})
    log.log(3, {"loss": 0.3})  # no second warning: the tracker was dropped
    log.close({"outcome": "completed"})
    assert [line["step"] for line in read_metrics(tmp_path)] == [1, 2, 3]
