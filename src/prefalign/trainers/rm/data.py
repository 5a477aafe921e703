"""A reward model's data: the shared preference-pair splits, and each pair's Llama 2 margin.

The margin m of −log σ(r⁺ − r⁻ − m) comes from a per-pair `margin` field: the formats keep a
record's scalar extra fields as the pair's metadata (data/formats/_common.py), so any format
carries it (a multi-turn Accepted/Rejected record gives each of its pairs the record's margin).
Because the formats keep a string and drop a list without complaint, every `margin` field of
every source is first checked on the raw records: anything but a finite number is an error
naming its file and line. Pairs without the field take m = 0, and the split says how many.
With margins on, a split's fingerprint covers them too, so a run does not resume onto other
margins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from prefalign.data.bundled import resolve_data_path
from prefalign.data.io import iter_records, json_type
from prefalign.data.types import DataError, Defect
from prefalign.engine.pair_splits import TokenizedSplit

MARGIN_FIELD = "margin"


def check_margin_fields(sources: Sequence[str]) -> None:
    """Raise DataError listing every record whose `margin` is not a finite number."""
    defects = []
    for source in sources:
        for record in iter_records(resolve_data_path(source)):
            if record.data is None or MARGIN_FIELD not in record.data:
                continue  # unreadable records are reported when the pairs are loaded
            problem = margin_problem(record.data[MARGIN_FIELD])
            if problem is not None:
                defects.append(Defect(record.source, record.line, MARGIN_FIELD, problem))
    if defects:
        raise DataError(defects, summary=(
            f"{len(defects)} record(s) with a margin that is not a number; rm.margin reads "
            "Llama 2's margin m of −log σ(r⁺ − r⁻ − m) from it (fix them, or leave out the "
            "field, which means m = 0)"))


def margin_problem(value: object) -> str | None:
    """Why `value` cannot be a margin, or None when it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:40]}…"
        return f"expected a number, got {json_type(value)} {shown}"
    if not math.isfinite(value):
        return f"expected a finite number, got {value!r}"
    return None


def split_margins(split: TokenizedSplit) -> Tensor:
    """(N,) float32 margins of the split's pairs in split order (0 where a pair has none); adds
    a warning to the split when some pairs have none."""
    values = [pair.provenance.meta(MARGIN_FIELD) for pair in split.pairs]
    missing = sum(value is None for value in values)
    if missing:
        split.warnings.append(f"rm.margin: {missing} of {len(values)} pairs have no "
                              f"{MARGIN_FIELD!r} field; they take m = 0")
    return torch.tensor([0.0 if value is None else float(value) for value in values],
                        dtype=torch.float32)


def with_margins(split: TokenizedSplit, margins: Tensor) -> TokenizedSplit:
    """The split with a fingerprint that also covers its margins (in split order)."""
    digest = hashlib.sha256(f"{split.fingerprint}\nmargins".encode())
    for value in margins.tolist():
        digest.update(f"\n{value!r}".encode())
    return dataclasses.replace(split, fingerprint=digest.hexdigest())
