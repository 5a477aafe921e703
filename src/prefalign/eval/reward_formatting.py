"""The labelled rows `prefalign rm eval`'s report.html, summary.md and terminal lines share, so the
three never disagree (the formatters are eval/formatting.py's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefalign.eval.formatting import MISSING, Row, fmt_ci, fmt_count, fmt_num, fmt_pct, section

SLICE_COLUMNS = ("n", "accuracy", "length-only", "length-balanced (95% CI)", "mean margin",
                 "margin vs length r")


def headline_rows(overall: Mapping[str, Any]) -> list[Row]:
    """(label, value): accuracy always beside the length baselines."""
    get = overall.get
    return [
        ("Pairs", fmt_count(get("n"))),
        ("Reward accuracy (r⁺ > r⁻)", fmt_pct(get("accuracy"))),
        ("Length-only baseline (the better of: prefer the shorter / the longer reply)",
         fmt_pct(get("length_only_accuracy"))),
        ("Length-balanced accuracy (95% CI)",
         fmt_ci(get("length_balanced_accuracy"), get("length_balanced_accuracy_low"),
                get("length_balanced_accuracy_high"))),
        ("Correlation: reward margin vs length difference", fmt_num(get("reward_length_corr"))),
        ("Mean reward margin r⁺ − r⁻", fmt_num(get("margin"), 3, signed=True)),
        ("Bradley–Terry loss (m = 0)", fmt_num(get("loss"), 4)),
        ("Mean reward: chosen / rejected",
         f"{fmt_num(get('chosen_reward'), signed=True)} / "
         f"{fmt_num(get('rejected_reward'), signed=True)}"),
    ]


def slice_row(label: str, metrics: Mapping[str, Any]) -> Row:
    return (label, fmt_count(metrics.get("n")), fmt_pct(metrics.get("accuracy")),
            fmt_pct(metrics.get("length_only_accuracy")),
            fmt_ci(metrics.get("length_balanced_accuracy"),
                   metrics.get("length_balanced_accuracy_low"),
                   metrics.get("length_balanced_accuracy_high")),
            fmt_num(metrics.get("margin"), 3, signed=True),
            fmt_num(metrics.get("reward_length_corr")))


def calibration_rows(calibration: Mapping[str, Any]) -> list[Row]:
    """(label, before, after) rows of the calibration section."""
    temperature = calibration.get("temperature")
    return [
        ("Expected calibration error (10 bins)", fmt_num(calibration.get("ece_before"), 3),
         fmt_num(calibration.get("ece_after"), 3)),
        ("Negative log-likelihood per pair", fmt_num(calibration.get("nll_before"), 4),
         fmt_num(calibration.get("nll_after"), 4)),
        ("Temperature", "1", "∞" if temperature is None else f"{temperature:.3g}"),
    ]


def dpo_rows(results: Mapping[str, Any]) -> list[Row]:
    """(label, reward model, DPO run) rows, when a DPO run was scored beside it."""
    dpo = section(results, "dpo", "overall")
    mine = section(results, "pairs", "overall")
    if not isinstance(dpo, Mapping) or not isinstance(mine, Mapping):
        return []
    rows = [(label, fmt_pct(mine.get(key)), fmt_pct(dpo.get(key))) for label, key in (
        ("Accuracy", "accuracy"), ("Length-only baseline", "length_only_accuracy"))]
    rows.append(("Length-balanced accuracy (95% CI)", *(
        fmt_ci(m.get("length_balanced_accuracy"), m.get("length_balanced_accuracy_low"),
               m.get("length_balanced_accuracy_high")) for m in (mine, dpo))))
    rows.append(("Correlation: margin vs length difference",
                 fmt_num(mine.get("reward_length_corr")), fmt_num(dpo.get("reward_length_corr"))))
    agreement = section(results, "dpo", "agreement") or {}
    rows.append(("Pairs ranked the same way by both", fmt_pct(agreement.get("same_ranking")),
                 MISSING))
    rows.append(("Correlation of the two margins", fmt_num(agreement.get("margin_corr")),
                 MISSING))
    return rows
