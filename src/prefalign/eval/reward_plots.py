"""The figures of `prefalign rm eval`'s report as PNG bytes: score distributions, the margin
against the length difference, the reliability diagram before and after temperature scaling,
and the reward model's margin against a DPO run's (drawn as eval/plots.py draws, on an Agg
canvas; None where the data is missing)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefalign.eval import plots
from prefalign.eval.formatting import as_number
from prefalign.eval.plots import (
    CHOSEN_COLOR,
    POLICY_COLOR,
    REFERENCE_COLOR,
    REJECTED_COLOR,
    _bins,
    _figure,
    _finite,
    _finite_pairs,
    _png,
)


def score_distributions(per_pair: Mapping[str, Sequence[Any]] | None) -> bytes | None:
    """Histograms of the chosen and rejected replies' rewards, and of the margin r⁺ − r⁻."""
    per_pair = per_pair or {}
    chosen, rejected = _finite(per_pair.get("chosen_reward")), _finite(per_pair.get("rejected_reward"))
    margins = _finite(per_pair.get("reward_margin"))
    if not (chosen or rejected):
        return None
    figure, (left, right) = _figure(11, 3.4, 2)
    bins = _bins(chosen + rejected, 30)
    for values, color, name, kind in ((chosen, CHOSEN_COLOR, "chosen", "stepfilled"),
                                      (rejected, REJECTED_COLOR, "rejected", "step")):
        if values:
            left.hist(values, bins=bins, color=color, histtype=kind, linewidth=1.8,
                      alpha=0.5 if kind == "stepfilled" else 1.0,
                      label=f"{name} (mean {sum(values) / len(values):+.2f})")
    left.set_xlabel("reward", fontsize=9)
    left.set_ylabel("replies", fontsize=9)
    left.legend(fontsize=8)
    if margins:
        right.hist(margins, bins=_bins(margins, 30), color=POLICY_COLOR, alpha=0.7)
        right.axvline(0, color="#333333", linewidth=0.8, linestyle=":")
        wrong = sum(1 for m in margins if m <= 0) / len(margins)
        right.set_title(f"r⁺ − r⁻ ≤ 0 in {100 * wrong:.1f}% of pairs", fontsize=9)
    right.set_xlabel("reward margin r⁺ − r⁻", fontsize=9)
    right.set_ylabel("pairs", fontsize=9)
    return _png(figure)


def margin_vs_length(per_pair: Mapping[str, Sequence[Any]] | None,
                     correlation: Any = None) -> bytes | None:
    """The reward margin against the length difference (chosen − rejected tokens)."""
    per_pair = per_pair or {}
    lengths = [as_number(c) - as_number(r) if as_number(c) is not None and as_number(r)
               is not None else None for c, r in zip(per_pair.get("chosen_tokens") or (),
                                                     per_pair.get("rejected_tokens") or (),
                                                     strict=False)]
    points = _finite_pairs(lengths, per_pair.get("reward_margin"))
    if not points:
        return None
    figure, (axis,) = _figure(5.6, 4.0)
    xs, ys = zip(*points, strict=True)
    colors = [POLICY_COLOR if y > 0 else REJECTED_COLOR for y in ys]
    axis.scatter(xs, ys, s=10, alpha=0.6, c=colors)
    axis.axhline(0, color="#555555", linewidth=0.6)
    axis.axvline(0, color="#555555", linewidth=0.6)
    number = as_number(correlation)
    axis.set_title("Pearson r = " + (f"{number:+.2f}" if number is not None else "—"),
                   fontsize=9)
    axis.set_xlabel("chosen − rejected reply length [tokens]", fontsize=9)
    axis.set_ylabel("reward margin r⁺ − r⁻", fontsize=9)
    return _png(figure)


def reliability_diagram(calibration: Mapping[str, Any] | None) -> bytes | None:
    """Observed preference against σ(r⁺ − r⁻) per bin, before and after temperature scaling,
    with the bins' counts; the diagonal is perfect calibration."""
    calibration = calibration or {}
    panels = [(key, title) for key, title in (("reliability_before", "before (T = 1)"),
                                              ("reliability_after", "after temperature scaling"))
              if calibration.get(key)]
    if not panels:
        return None
    figure, axes = _figure(5.0 * len(panels), 4.0, len(panels))
    for axis, (key, title) in zip(axes, panels, strict=True):
        _reliability_panel(axis, calibration[key], title, calibration, key)
    return _png(figure)


def _reliability_panel(axis: Any, rows: Sequence[Mapping[str, Any]], title: str,
                       calibration: Mapping[str, Any], key: str) -> None:
    filled = [row for row in rows if row.get("count")]
    total = sum(row["count"] for row in filled) or 1
    widths = [as_number(row.get("high")) - as_number(row.get("low")) for row in filled]
    axis.bar([as_number(row.get("low")) for row in filled],
             [row["count"] / total for row in filled], width=widths, align="edge",
             color=REFERENCE_COLOR, alpha=0.35, label="share of readings")
    points = _finite_pairs([row.get("mean_predicted") for row in filled],
                           [row.get("observed") for row in filled])
    if points:
        axis.plot(*zip(*points, strict=True), marker="o", color=POLICY_COLOR,
                  label="observed preference")
    axis.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=0.8)
    ece = as_number(calibration.get("ece_before" if key.endswith("before") else "ece_after"))
    temperature = as_number(calibration.get("temperature"))
    suffix = f", T = {temperature:.3g}" if key.endswith("after") and temperature else ""
    axis.set_title(f"{title}: ECE {ece:.3f}{suffix}" if ece is not None else title, fontsize=9)
    axis.set(xlim=(0, 1), ylim=(0, 1.02))
    axis.set_xlabel("predicted P(first reply preferred) = σ(r_a − r_b)", fontsize=9)
    axis.set_ylabel("observed fraction preferred", fontsize=9)
    axis.legend(fontsize=7, loc="upper left")


def dpo_comparison(per_pair: Mapping[str, Sequence[Any]] | None) -> bytes | None:
    """Per pair: the reward model's margin against the DPO run's implicit-reward margin."""
    points = _finite_pairs((per_pair or {}).get("dpo_margin"),
                           (per_pair or {}).get("reward_margin"))
    if not points:
        return None
    figure, (axis,) = _figure(5.2, 4.2)
    xs, ys = zip(*points, strict=True)
    agree = [(x > 0) == (y > 0) for x, y in points]
    for flag, color, label in ((True, POLICY_COLOR, "same ranking"),
                               (False, REJECTED_COLOR, "different ranking")):
        chosen = [point for point, ok in zip(points, agree, strict=True) if ok == flag]
        if chosen:
            axis.scatter(*zip(*chosen, strict=True), s=10, alpha=0.6, color=color, label=label)
    axis.axhline(0, color="#555555", linewidth=0.6)
    axis.axvline(0, color="#555555", linewidth=0.6)
    axis.set_xlabel("DPO implicit-reward margin β·h", fontsize=9)
    axis.set_ylabel("reward model margin r⁺ − r⁻", fontsize=9)
    axis.legend(fontsize=8)
    return _png(figure)


def draw_reward_all(results: Mapping[str, Any],
                    metrics_rows: Sequence[Mapping[str, Any]] | None) -> dict[str, bytes | None]:
    """Every figure of the reward-model report by key, None where its data is missing."""
    pairs = results.get("pairs") if isinstance(results.get("pairs"), Mapping) else {}
    per_pair = pairs.get("per_pair")
    overall = pairs.get("overall") or {}
    calibration = results.get("calibration")
    return {
        "training_curves": plots.training_curves(metrics_rows),
        "score_distributions": score_distributions(per_pair),
        "margin_vs_length": margin_vs_length(per_pair, overall.get("reward_length_corr")),
        "reliability": reliability_diagram(calibration if isinstance(calibration, Mapping)
                                           else None),
        "dpo_comparison": dpo_comparison(per_pair),
    }
