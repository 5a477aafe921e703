"""Fault injection on the tiny model: `kill -9` at each stage of a save, and a full disk while
writing a checkpoint, final/, the reference cache and the evaluation's outputs. Each test checks
what survives, what the user is told, and that the resumed run ends with exactly the weights of
the run that was never interrupted.

The full-disk tests run on a small tmpfs, filled to the brim just before the write under test,
so the libraries fail exactly as on a real full disk (safetensors' SafetensorError, torch's
"unexpected pos" RuntimeError); mounting needs root, and without it they skip. The injected
ENOSPC tests (an fsync that reports a full disk, as NFS and delayed allocation do) run anywhere.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prefalign.cli.main import main
from prefalign.engine.manifest import read_manifest
from prefalign.eval.runner import EvalOptions, run_eval
from prefalign.storage import StorageError
from prefalign.trainers.dpo.train import train
from prefalign.trainers.loop import loop as loop_module
from prefalign.trainers.loop.checkpoint import save_checkpoint, verify_checkpoint
from prefalign.trainers.loop.verify import verify_run
from run_helpers import final_weights, max_weight_difference, tiny_config
from tiny_models import tiny_model_dir

WORKER = Path(__file__).with_name("fault_worker.py")
# Checkpoints at steps 2 and 4, only the newest kept: the save at step 4 also prunes step-2.
TRAIN = {"max_steps": 4, "save_every": 2, "keep_last": 1, "eval_every": 0}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, model_dir) -> Path:
    """The run that nothing interrupts: its final/ is what every recovered run must match."""
    result = train(_config(tmp_path_factory.mktemp("uninterrupted"), model_dir))
    assert result.outcome == "completed"
    return result.run_dir


def _config(tmp_path: Path, model_dir: Path, **sections):
    return tiny_config(tmp_path, model_dir, train=TRAIN, **sections)


def _same_weights(run_dir: Path, uninterrupted: Path) -> bool:
    return max_weight_difference(final_weights(run_dir), final_weights(uninterrupted)) == 0.0


# kill -9 ---------------------------------------------------------------------------------------

# Each stage of the save of step 4 (and of final/) and the checkpoint a resume starts from.
KILL_STAGES = {"weights": "step-2", "optimizer": "step-2", "marker": "step-2",
               "published": "step-4", "pruning": "step-4", "final": "step-4"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill worker forks one child per stage")
def test_a_kill_at_each_stage_of_a_save_resumes_to_the_same_weights(
        tmp_path, model_dir, uninterrupted, capsys):
    """Killed while saving step 4 (before it is renamed into place the older checkpoint is
    still whole; after it, the new one is) or while writing final/: no final/ is left half
    written, the resume starts from the newest whole checkpoint without a warning, and ends
    with the uninterrupted run's weights, bit for bit."""
    configs = {stage: _config(tmp_path / stage, model_dir) for stage in KILL_STAGES}
    cases = [{"config": config.to_dict(), "stage": stage, "step": 4}
             for stage, config in configs.items()]
    (tmp_path / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
    done = subprocess.run([sys.executable, str(WORKER), str(tmp_path / "cases.json")],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    ended = json.loads(done.stdout.strip().splitlines()[-1])
    assert ended == dict.fromkeys(KILL_STAGES, "killed"), done.stderr[-3000:]
    for stage, resumes_from in KILL_STAGES.items():
        run_dir = tmp_path / stage / "runs" / "tiny"
        assert not (run_dir / "final").exists(), stage
        assert read_manifest(run_dir)["outcome"] == "running", stage  # as a kill leaves it
        assert verify_run(run_dir).resume_from == run_dir / "checkpoints" / resumes_from, stage
        capsys.readouterr()
        result = train(configs[stage], resume=True)
        assert result.outcome == "completed" and result.steps == 4, stage
        assert "warning" not in capsys.readouterr().err, stage  # nothing damaged, none skipped
        assert _same_weights(run_dir, uninterrupted), stage
        assert not verify_run(run_dir).failed, stage


# a full disk on a real (small) file system ---------------------------------------------------

class SmallDisk:
    """A tmpfs mounted for one test; `fill` leaves only `leave` bytes free."""

    def __init__(self, path: Path):
        self.path = path
        self.filler = path / "filler"

    def fill(self, leave: int) -> None:
        stats = os.statvfs(self.path)
        free = stats.f_bavail * stats.f_frsize
        with open(self.filler, "ab") as handle:
            for _ in range(max(free - leave, 0) // 4096):
                handle.write(b"\0" * 4096)

    def free_up(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path):
    path = tmp_path / "disk"
    path.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the injected-ENOSPC tests stand in")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"cannot mount a tmpfs here ({error})")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    yield SmallDisk(path)
    if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)  # busy


def _fill_before(monkeypatch, name: str, disk: SmallDisk, leave: int, step: int | None = None):
    """Fill the disk just before the loop calls `name` (at `step`, for save_checkpoint)."""
    original = getattr(loop_module, name)

    def filled_first(*args, **kwargs):
        if step is None or args[1] == step:
            disk.fill(leave)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop_module, name, filled_first)


@pytest.mark.parametrize("leave, failing_library", [(8 << 10, "SafetensorError"),
                                                    (160 << 10, "RuntimeError")],
                         ids=["weights-do-not-fit", "optimizer-does-not-fit"])
def test_a_full_disk_while_saving_a_checkpoint(tmp_path, model_dir, uninterrupted, small_disk,
                                              monkeypatch, leave, failing_library):
    """No room for the weights (safetensors fails) or only for them (torch's writer fails for
    the optimizer state): one StorageError naming the checkpoint and the bytes it needed; the
    partial save is gone, step-2 intact, the manifest says why; after freeing space the resume
    ends with the uninterrupted run's weights."""
    config = _config(tmp_path, model_dir, run={"output_dir": str(small_disk.path / "runs")})
    run_dir = small_disk.path / "runs" / "tiny"
    _fill_before(monkeypatch, "save_checkpoint", small_disk, leave, step=4)
    with pytest.raises(StorageError) as raised:
        train(config)
    message = str(raised.value)
    assert raised.value.disk_full and type(raised.value.__cause__).__name__ == failing_library
    assert message.startswith(f"no space left on device writing {run_dir}/checkpoints/step-4: "
                              "needed about ")
    assert read_manifest(run_dir)["outcome"] == f"failed: {message}"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-2"]
    assert verify_checkpoint(run_dir / "checkpoints" / "step-2").ok

    small_disk.free_up()
    monkeypatch.setattr(loop_module, "save_checkpoint", save_checkpoint)
    assert train(config, resume=True).outcome == "completed"
    assert _same_weights(run_dir, uninterrupted)


def test_a_full_disk_while_writing_final_is_one_line_and_exit_1(tmp_path, model_dir,
                                                                uninterrupted, small_disk,
                                                                monkeypatch, capsys):
    config = _config(tmp_path, model_dir, run={"output_dir": str(small_disk.path / "runs")})
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    run_dir = small_disk.path / "runs" / "tiny"
    _fill_before(monkeypatch, "save_final", small_disk, 16 << 10)
    capsys.readouterr()
    assert main(["train", "-c", str(config_file)]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("prefalign: error")]
    assert len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith(f"prefalign: error: no space left on device writing "
                                f"{run_dir}/final: needed about ")
    assert read_manifest(run_dir)["outcome"].startswith("failed: no space left on device")
    assert not (run_dir / "final").exists() and not (run_dir / ".tmp-final").exists()

    small_disk.free_up()
    monkeypatch.undo()
    assert main(["train", "-c", str(config_file), "--resume"]) == 0
    assert _same_weights(run_dir, uninterrupted)


def test_a_full_disk_while_caching_reference_logps(tmp_path, model_dir, small_disk, monkeypatch):
    from prefalign.data.tokenizer import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(small_disk.path / "cache"))
    (small_disk.path / "cache").mkdir()
    small_disk.fill(0)
    config = _config(tmp_path, model_dir, reference={"strategy": "precomputed"})
    with pytest.raises(StorageError) as raised:
        train(config)
    assert raised.value.disk_full
    assert str(raised.value).startswith(f"no space left on device writing {small_disk.path}/"
                                        "cache/reference-logps/")
    assert "needed about" in str(raised.value)
    assert not list((small_disk.path / "cache").rglob("*.tmp"))
    small_disk.free_up()
    assert train(config).outcome == "completed"


def test_a_full_disk_while_writing_evaluation_outputs(tmp_path, uninterrupted, small_disk):
    options = EvalOptions(max_pairs=4, prompt_sets=(), kl_prompts=0, helpful=None,
                          alternate_template=None, batch_size=4)
    small_disk.fill(0)
    with pytest.raises(StorageError) as raised:
        run_eval(uninterrupted, small_disk.path / "out", options)
    assert str(raised.value).startswith(f"no space left on device writing {small_disk.path}/"
                                        "out/eval.json: needed about ")
    assert [p.name for p in (small_disk.path / "out").iterdir()] == []


# a full disk reported by fsync (no mount needed) -----------------------------------------------

def test_an_injected_enospc_fails_the_save_and_the_resume_recovers(tmp_path, model_dir,
                                                                    uninterrupted, monkeypatch):
    """The first fsync of the step-4 save reports ENOSPC: the save is abandoned and removed,
    the error names the checkpoint, and the run resumes from step-2 to the same weights."""
    real_fsync, armed = os.fsync, []

    def fsync(fd: int) -> None:
        if armed:
            armed.clear()
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    def armed_save(run_dir, step, **kwargs):
        if step == 4:
            armed.append(True)
        return save_checkpoint(run_dir, step, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(loop_module, "save_checkpoint", armed_save)
    config = _config(tmp_path, model_dir)
    run_dir = tmp_path / "runs" / "tiny"
    with pytest.raises(StorageError, match=f"writing {run_dir}/checkpoints/step-4: needed about"):
        train(config)
    assert read_manifest(run_dir)["outcome"].startswith("failed: no space left on device")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-2"]
    monkeypatch.undo()
    assert train(config, resume=True).outcome == "completed"
    assert _same_weights(run_dir, uninterrupted)
