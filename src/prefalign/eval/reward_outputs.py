"""Write `prefalign rm eval`'s files atomically: eval.json, pairs.csv, report.html, summary.md."""

from __future__ import annotations

import json
from pathlib import Path

from prefalign.atomic import atomic_open
from prefalign.engine.logger import read_metrics
from prefalign.eval.outputs import EVAL_JSON, PAIRS_CSV, json_safe, pairs_csv


def write_reward_outputs(out_dir: Path, results: dict, run_dir: Path) -> None:
    """Every file of one reward-model evaluation into `out_dir` (created if needed)."""
    from prefalign.eval.reward_report import write_reward_report
    from prefalign.eval.reward_summary import render_reward_summary

    out_dir.mkdir(parents=True, exist_ok=True)
    clean = json_safe(results)
    with atomic_open(out_dir / EVAL_JSON, "w") as handle:
        json.dump(clean, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    with atomic_open(out_dir / PAIRS_CSV, "w") as handle:
        handle.write(pairs_csv(clean["pairs"]["per_pair"]))
    metrics_rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    write_reward_report(out_dir, clean, metrics_rows)
    with atomic_open(out_dir / "summary.md", "w") as handle:
        handle.write(render_reward_summary(clean))
