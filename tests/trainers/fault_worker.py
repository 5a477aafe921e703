"""Entry point for the kill tests: `python fault_worker.py CASES.json`.

CASES is a JSON list of {"config": Config.to_dict(), "stage": STAGE, "step": STEP}. For each
case a forked child trains the config and kills itself with SIGKILL, as `kill -9` would, at
STAGE of saving checkpoint STEP (or of writing final/): right after the named part of the save
has finished, so that the files on disk are exactly what a crash at that point leaves. The
children fork from this process before it has run anything, so the libraries are imported once
for all cases. Prints {stage: how the child ended} as JSON: "killed" when the stage was reached.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefalign.config import config_from_dict
from prefalign.engine.models import final
from prefalign.trainers.dpo.train import train
from prefalign.trainers.loop import checkpoint


def _kill() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_after(module: Any, name: str, when: Callable[..., bool]) -> None:
    """Replace `module.name` by a call of the original followed, when `when(*args)`, by a kill."""
    original = getattr(module, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if when(*args, **kwargs):
            _kill()
        return result

    setattr(module, name, wrapped)


def arm(stage: str, step: int) -> None:
    """Install the kill for `stage` of the save of checkpoint `step`."""
    def staging(directory: Path, *_: Any, **__: Any) -> bool:
        return Path(directory).name == f".tmp-step-{step}"

    if stage == "weights":  # model/adapter written, nothing else
        _kill_after(checkpoint, "_write_weights", staging)
    elif stage == "optimizer":
        _kill_after(checkpoint, "_write_optimizer", staging)
    elif stage == "marker":  # every file and COMPLETE written, not yet renamed into place
        _kill_after(checkpoint, "_write_marker", staging)
    elif stage == "published":  # step-N in place, the older checkpoints not yet pruned
        _kill_after(checkpoint, "_publish", lambda source, target: target.name == f"step-{step}")
    elif stage == "pruning":  # an old checkpoint renamed to .old-step-M, not yet deleted
        original = shutil.rmtree

        def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
            if Path(path).name.startswith(".old-step-"):
                _kill()
            original(path, *args, **kwargs)

        shutil.rmtree = rmtree  # the worker's own process: nothing else is running
    elif stage == "final":  # final/'s model written in its staging directory, no tokenizer yet
        _kill_after(final, "_write_model", lambda policy, directory, **_: True)
    else:
        raise SystemExit(f"unknown stage {stage!r}")


def run_case(case: dict) -> str:
    """Train one case in a forked child; how it ended ("killed", "exit N" or "signal N")."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            arm(case["stage"], case["step"])
            train(config_from_dict(case["config"]))
            code = 0  # the stage was never reached
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "killed" if os.WTERMSIG(status) == signal.SIGKILL else f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as handle:
        cases = json.load(handle)
    print(json.dumps({case["stage"]: run_case(case) for case in cases}), flush=True)
