"""A finished run directory and the two models it holds: the reference it started from and its
trained policy.

The reference is what the run started from (base weights plus any starting adapter, as in
training) or the run's `reference.source`, unless the caller names another model. The policy is the run's `final/` directory,
loaded with `from_pretrained` from safetensors only. Evaluation, probes and judges that read a
run (a DPO run's implicit reward) all load it through here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from prefalign.config import Config, config_from_dict
from prefalign.engine.manifest import MANIFEST, read_manifest
from prefalign.engine.models.load import load_reference_model
from prefalign.integrity import require_checksums

if TYPE_CHECKING:
    from torch import nn

FINAL = "final"


@dataclass(frozen=True)
class RunFiles:
    """A finished run: its directory, resolved config, manifest and final model directory."""

    run_dir: Path
    config: Config
    manifest: dict
    final_dir: Path


def read_run(run_dir: str | Path) -> RunFiles:
    """The run at `run_dir`; FileNotFoundError when it has no manifest or no final/ model,
    CorruptStateError when a final/ file fails its checksum."""
    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no {MANIFEST})")
    final_dir = run_dir / FINAL
    if not final_dir.is_dir():
        raise FileNotFoundError(
            f"{run_dir}: has no {FINAL}/ model (the run did not finish; `prefalign train ... "
            f"--resume` completes it)"
        )
    require_checksums(final_dir)
    manifest = read_manifest(run_dir)
    return RunFiles(run_dir, config_from_dict(manifest["config"]), manifest, final_dir)


def load_reference(run: RunFiles, override: str | None = None) -> nn.Module:
    """The run's reference model (its `reference.source` when it names one), or the model
    `override` names (alias, HF directory, GGUF) in the run's dtype, with no adapter. Eval
    mode, no gradients."""
    model = run.config.model
    source = override if override is not None else run.config.reference.source
    if source is not None:
        model = replace(model, source=source, adapter=None)
    return load_reference_model(model)


def load_policy(run: RunFiles) -> nn.Module:
    """The trained model in `final/`, in the run's dtype. Eval mode, no gradients."""
    from prefalign.engine.models.resolve import load_final_model

    return load_final_model(run.final_dir, run.config.model)
