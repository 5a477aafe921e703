"""Write an evaluation's files atomically: eval.json, pairs.csv, generations.jsonl, and the
report (report.html, summary.md). Each file is written to a temporary name and renamed, so a
crash leaves either the previous file or the new one, never half of one; a full disk is a
one-line `StorageError` naming the file and its size."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

from prefalign.atomic import write_json_atomic, write_text_atomic
from prefalign.engine.logger import read_metrics
from prefalign.storage import reporting_storage

EVAL_JSON = "eval.json"
PAIRS_CSV = "pairs.csv"
GENERATIONS = "generations.jsonl"


def write_outputs(out_dir: Path, results: dict, rows: Sequence[dict], run_dir: Path) -> None:
    """Every file of one evaluation into `out_dir` (created if needed)."""
    from prefalign.eval.report import write_report
    from prefalign.eval.summary import render_summary

    with reporting_storage(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    clean = json_safe(results)
    write_json_atomic(clean, out_dir / EVAL_JSON)
    heldout = clean.get("heldout") or {}
    if heldout.get("per_pair"):
        write_text_atomic(pairs_csv(heldout["per_pair"]), out_dir / PAIRS_CSV)
    write_text_atomic("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                      out_dir / GENERATIONS)
    metrics_rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    write_report(out_dir, clean, metrics_rows, list(rows))
    write_text_atomic(render_summary(clean), out_dir / "summary.md")


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
