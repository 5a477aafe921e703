"""summary.md and the terminal lines of `prefalign rm eval`: the report's numbers without figures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefalign.eval.formatting import MISSING, UNNAMED, fmt_ci, fmt_num, fmt_pct, section
from prefalign.eval.reward_formatting import (
    SLICE_COLUMNS,
    calibration_rows,
    dpo_rows,
    headline_rows,
    slice_row,
)
from prefalign.eval.summary import _markdown_table


def render_reward_summary(results: Mapping[str, Any]) -> str:
    """summary.md: the run, the headline, slices, calibration and the DPO comparison."""
    run = results.get("run") or {}
    name = section(results, "run", "name") or UNNAMED
    lines = [f"# prefalign rm eval — {name}", "",
             f"- Run: `{run.get('run_dir', MISSING)}` ({run.get('outcome', MISSING)}, "
             f"{run.get('loss', MISSING)}, {run.get('steps', MISSING)} steps)",
             f"- Base model: `{run.get('model_source', MISSING)}`", "", "## Pairs", ""]
    overall = section(results, "pairs", "overall")
    if isinstance(overall, Mapping):
        lines += _markdown_table(("metric", "value"), headline_rows(overall))
        for field, groups in (section(results, "pairs", "slices") or {}).items():
            lines += ["", f"### By {field}", ""]
            lines += _markdown_table((field, *SLICE_COLUMNS),
                                     [slice_row(str(k), v) for k, v in (groups or {}).items()])
    else:
        lines.append("Not measured.")
    lines += ["", "## Calibration", ""]
    calibration = results.get("calibration")
    if isinstance(calibration, Mapping) and "ece_before" in calibration:
        lines += [f"{calibration.get('split', '')}.", ""]
        lines += _markdown_table(("", "before", "after temperature scaling"),
                                 calibration_rows(calibration))
    else:
        note = calibration.get("note") if isinstance(calibration, Mapping) else None
        lines.append(note or "Not measured.")
    lines += ["", "## DPO beside it", ""]
    rows = dpo_rows(results)
    lines += (_markdown_table(("", "reward model", "DPO implicit reward"), rows) if rows
              else ["Not measured (no --dpo run)."])
    return "\n".join(lines) + "\n"


def format_reward_headline(results: Mapping[str, Any]) -> str:
    """A few plain lines for the terminal."""
    overall = section(results, "pairs", "overall")
    if not isinstance(overall, Mapping):
        return "pairs: not measured"
    get = overall.get
    balanced = fmt_ci(get("length_balanced_accuracy"), get("length_balanced_accuracy_low"),
                      get("length_balanced_accuracy_high"))
    lines = [f"reward accuracy {fmt_pct(get('accuracy'))} on {get('n', '?')} pairs "
             f"(length-only {fmt_pct(get('length_only_accuracy'))}, length-balanced {balanced}); "
             f"margin vs length r = {fmt_num(get('reward_length_corr'))}"]
    calibration = results.get("calibration")
    if isinstance(calibration, Mapping) and "ece_before" in calibration:
        lines.append(f"ECE {fmt_num(calibration.get('ece_before'), 3)} → "
                     f"{fmt_num(calibration.get('ece_after'), 3)} after temperature "
                     f"{fmt_num(calibration.get('temperature'), 3)}")
    dpo = section(results, "dpo", "overall")
    if isinstance(dpo, Mapping):
        lines.append(f"DPO run beside it: accuracy {fmt_pct(dpo.get('accuracy'))}, "
                     "length-balanced " + fmt_ci(dpo.get("length_balanced_accuracy"),
                                                 dpo.get("length_balanced_accuracy_low"),
                                                 dpo.get("length_balanced_accuracy_high")))
    return "\n".join(lines)
