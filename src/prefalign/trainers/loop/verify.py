"""Which of a run's files can be trusted: the resume point, and `prefalign verify RUN_DIR`.

A resume takes the newest checkpoint that passes `verify_checkpoint` (every file at its
recorded size and sha256); each newer one it passes over is named, with the reason, in one
warning line. `verify_run` checks everything a run keeps: manifest, checkpoints, final/, its
precomputed reference caches and its step-0 held-out log-probs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from prefalign.engine.manifest import MANIFEST, read_manifest
from prefalign.integrity import Check, CorruptStateError, check_checksums
from prefalign.trainers.loop.checkpoint import CHECKPOINTS, checkpoint_step, verify_checkpoint
from prefalign.trainers.loop.heldout import INITIAL_LOGPS, verify_initial_logps
from prefalign.trainers.loop.refcache import verify_cache

FINAL = "final"
_FINISHED = ("completed", "early_stopped")


def resume_checkpoint(run_dir: Path, *, announce: bool = True) -> Path | None:
    """The newest checkpoint of `run_dir` that passes verification, or None. With `announce`,
    one warning line on stderr for each newer `step-N` directory passed over, and why."""
    chosen, skipped = None, []
    for path in reversed(step_dirs(run_dir)):
        check = verify_checkpoint(path)
        if check.ok:
            chosen = check
            break
        skipped.append(check)
    if announce:
        instead = f"resuming from {chosen.path.name}" if chosen is not None else \
            "no verified checkpoint is left, so training starts from step 0"
        for check in skipped:
            print(f"prefalign: warning: skipping checkpoint {check.path}: {check.detail}; "
                  f"{instead}", file=sys.stderr)
        if chosen is not None and "only sizes" in chosen.detail:
            print(f"prefalign: note: {chosen.path}: {chosen.detail}", file=sys.stderr)
    return chosen.path if chosen is not None else None


def step_dirs(run_dir: Path) -> list[Path]:
    """The run's `checkpoints/step-N` directories, complete or not, in step order."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        try:
            found.append((checkpoint_step(child), child))
        except ValueError:  # .tmp-step-N and .old-step-N: leftovers the next save removes
            continue
    return [path for _, path in sorted(found) if path.is_dir()]


@dataclass(frozen=True)
class RunVerdict:
    """`checks`: one per file or directory; `resume_from`: the newest verified checkpoint."""

    checks: list[Check]
    resume_from: Path | None

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]


def verify_run(run_dir: Path) -> RunVerdict:
    """A verdict on each file a run keeps; FileNotFoundError when `run_dir` is no run."""
    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).is_file() and not (run_dir / CHECKPOINTS).is_dir():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no {MANIFEST}, no "
                                f"{CHECKPOINTS}/)")
    manifest, checks = _manifest(run_dir)
    checkpoints = [verify_checkpoint(path) for path in step_dirs(run_dir)]
    resume_from = next((c.path for c in reversed(checkpoints) if c.ok), None)
    checks.extend(checkpoints)
    checks.append(_final(run_dir, manifest))
    for split, info in _cache_entries(manifest):
        cache = verify_cache(Path(info["cache"]), info.get("key_sha256"))
        checks.append(Check(cache.path, cache.ok, f"reference cache ({split}): {cache.detail}"))
    if (run_dir / INITIAL_LOGPS).exists():
        checks.append(verify_initial_logps(run_dir / INITIAL_LOGPS))
    return RunVerdict(checks, resume_from)


def _manifest(run_dir: Path) -> tuple[dict, list[Check]]:
    path = run_dir / MANIFEST
    if not path.is_file():
        return {}, [Check(path, False, "missing")]
    try:
        manifest = read_manifest(run_dir)
    except (OSError, CorruptStateError) as error:
        return {}, [Check(path, False, str(error).removeprefix(f"{path} "))]
    return manifest, [Check(path, True, f"readable; outcome {manifest.get('outcome')!r}")]


def _final(run_dir: Path, manifest: dict) -> Check:
    final = run_dir / FINAL
    if final.is_dir():
        return check_checksums(final)
    outcome = str(manifest.get("outcome", ""))
    if outcome in _FINISHED:
        return Check(final, False, f"missing, though the run's outcome is {outcome!r}")
    return Check(final, True, "absent (the run has not finished)")


def _cache_entries(manifest: dict) -> list[tuple[str, dict]]:
    reference = manifest.get("reference")
    splits = reference.get("splits") if isinstance(reference, dict) else None
    if not isinstance(splits, dict):
        return []
    return [(name, info) for name, info in splits.items()
            if isinstance(info, dict) and isinstance(info.get("cache"), str)]
