"""What eval.json says about the reference a run is compared against (the run itself is read by
`prefalign.engine.models.runs`)."""

from __future__ import annotations

from prefalign.engine.models.runs import RunFiles


def reference_description(run: RunFiles, override: str | None = None) -> dict[str, str | None]:
    """What eval.json records about the reference."""
    if override is not None:
        return {"source": override, "note": "given with --reference"}
    if run.config.reference.source is not None:
        return {"source": run.config.reference.source, "note": "the run's reference.source"}
    model = run.config.model
    note = "the base weights the run started from"
    if model.adapter is not None:
        note += " with its starting adapter merged"
    return {"source": model.source, "adapter": model.adapter, "note": note}
