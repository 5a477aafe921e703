"""Write an evaluation's files atomically: eval.json, pairs.csv, generations.jsonl, and the
report (report.html, summary.md). Each file is written to a temporary name and renamed, so a
crash leaves either the previous file or the new one, never half of one."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

from prefalign.atomic import atomic_open
from prefalign.engine.logger import read_metrics

EVAL_JSON = "eval.json"
PAIRS_CSV = "pairs.csv"
GENERATIONS = "generations.jsonl"


def write_outputs(out_dir: Path, results: dict, rows: Sequence[dict], run_dir: Path) -> None:
    """Every file of one evaluation into `out_dir` (created if needed)."""
    from prefalign.eval.report import write_report
    from prefalign.eval.summary import render_summary

    out_dir.mkdir(parents=True, exist_ok=True)
    clean = json_safe(results)
    with atomic_open(out_dir / EVAL_JSON, "w") as handle:
        json.dump(clean, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    heldout = clean.get("heldout") or {}
    if heldout.get("per_pair"):
        with atomic_open(out_dir / PAIRS_CSV, "w") as handle:
            handle.write(pairs_csv(heldout["per_pair"]))
    with atomic_open(out_dir / GENERATIONS, "w") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    metrics_rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    write_report(out_dir, clean, metrics_rows, list(rows))
    with atomic_open(out_dir / "summary.md", "w") as handle:
        handle.write(render_summary(clean))


def pairs_csv(columns: dict[str, list]) -> str:
    """The per-pair columns as CSV text, one row per pair, header first."""
    names = list(columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    writer.writerows(zip(*(columns[name] for name in names), strict=True))
    return buffer.getvalue()


def json_safe(value: object) -> object:
    """`value` with NaN and infinities replaced by None, so that eval.json is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
