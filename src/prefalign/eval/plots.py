"""The report's figures as PNG bytes: training curves, margins, log-prob shifts, refusals, lengths.

matplotlib is imported inside the functions (so `import prefalign` stays light) and every figure
is drawn on an explicit Agg canvas, never through pyplot: no GUI backend, no global figure state.
Each function returns None when its data is missing, so the report can say what was not drawn.
Values may be null or NaN (eval.json allows both); they are dropped point by point.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prefalign.eval.formatting import as_number

DPI = 100
REFERENCE_COLOR, POLICY_COLOR = "#8a8a8a", "#1f6fb4"
CHOSEN_COLOR, REJECTED_COLOR = "#2a9d3a", "#c8402a"
# Train-row metric names (metrics.jsonl) -> the eval rows' names, so both splits share a panel.
_ALIASES = {"rewards/accuracy": "accuracy", "rewards/margin": "margin",
            "logps/chosen_change": "chosen_logp_change",
            "logps/rejected_change": "rejected_logp_change"}
_SPLITS = ("train", "eval")
Series = dict[tuple[str, str], list[tuple[float, float]]]


def data_uri(png: bytes) -> str:
    """PNG bytes as a `data:image/png;base64,...` URI for an <img src>."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(width: float, height: float, panels: int = 1) -> tuple[Any, list[Any]]:
    """A constrained-layout Figure on an Agg canvas with `panels` axes side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    return figure, list(axes)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _finite(values: Iterable[Any] | None) -> list[float]:
    return [number for number in map(as_number, values or ()) if number is not None]


def _finite_pairs(xs: Sequence[Any] | None, ys: Sequence[Any] | None) -> list[tuple[float, float]]:
    """(x, y) where both are finite numbers; columns of unequal length are cut to the shorter."""
    pairs = ((as_number(x), as_number(y)) for x, y in zip(xs or (), ys or (), strict=False))
    return [(x, y) for x, y in pairs if x is not None and y is not None]


def _differences(first: Sequence[Any] | None, second: Sequence[Any] | None) -> list[float]:
    return [a - b for a, b in _finite_pairs(first, second)]


# ---- training curves --------------------------------------------------------------------------

def metric_series(rows: Iterable[Mapping[str, Any]]) -> Series:
    """{(split, metric): [(step, value), ...]} from metrics.jsonl rows.

    Accepts both layouts: a row with a "split" field and plain names ("loss", "rewards/accuracy"),
    and a row with "train/…" or "eval/…" names. Non-numeric values (the "nan" strings) are dropped.
    """
    series: Series = {}
    for row in rows:
        step = as_number(row.get("step"))
        if step is None:
            continue
        for key, value in row.items():
            split, _, name = key.partition("/")
            if split not in _SPLITS:
                split, name = str(row.get("split", "train")), key
            number = as_number(value)
            if name in ("step", "time", "split") or number is None:
                continue
            series.setdefault((split, _ALIASES.get(name, name)), []).append((step, number))
    return series


def _rolling_mean(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value - (values[index - window] if index >= window else 0.0)
        out.append(total / min(index + 1, window))
    return out


def _plot_split(axis: Any, points: list[tuple[float, float]], split: str, color: str,
                label: str) -> None:
    """Train: faint raw line plus a rolling mean; eval: markers (evaluated every N steps)."""
    steps, values = zip(*sorted(points), strict=True)
    if split == "train":
        axis.plot(steps, values, color=color, alpha=0.3, linewidth=0.8)
        window = max(1, len(values) // 10)
        axis.plot(steps, _rolling_mean(list(values), window), color=color, linewidth=1.6,
                  label=f"{label} (mean of {window})" if window > 1 else label)
    else:
        axis.plot(steps, values, color=color, marker="o", linestyle="--", linewidth=1.2,
                  label=label)


_PANELS = (  # (title, [(metric, colour, legend suffix)], reference line)
    ("Loss", [("loss", "#333333", "")], None),
    ("Reward accuracy", [("accuracy", POLICY_COLOR, "")], 0.5),
    ("Reward margin", [("margin", POLICY_COLOR, "")], 0.0),
    ("Log-prob change vs reference", [("chosen_logp_change", CHOSEN_COLOR, " chosen"),
                                      ("rejected_logp_change", REJECTED_COLOR, " rejected")], 0.0),
)


def training_curves(metrics_rows: Iterable[Mapping[str, Any]] | None) -> bytes | None:
    """Loss, reward accuracy, reward margin and chosen/rejected log-prob change over steps."""
    series = metric_series(metrics_rows or ())
    wanted = {metric for _, lines, _ in _PANELS for metric, _, _ in lines}
    if not any(metric in wanted for _, metric in series):
        return None
    figure, axes = _figure(11, 3.0, len(_PANELS))
    for axis, (title, lines, baseline) in zip(axes, _PANELS, strict=True):
        for metric, color, suffix in lines:
            for split in _SPLITS:
                if series.get((split, metric)):
                    edge = color if split == "train" else _darker(color)
                    _plot_split(axis, series[(split, metric)], split, edge, split + suffix)
        if baseline is not None:
            axis.axhline(baseline, color="#bbbbbb", linewidth=0.8, zorder=0)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step", fontsize=9)
        axis.tick_params(labelsize=8)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
        else:
            axis.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axis.transAxes)
    return _png(figure)


def _darker(color: str) -> str:
    red, green, blue = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return "#{:02x}{:02x}{:02x}".format(*(int(channel * 0.6) for channel in (red, green, blue)))


# ---- held-out pairs ----------------------------------------------------------------------------

def margin_histogram(per_pair: Mapping[str, Sequence[Any]] | None) -> bytes | None:
    """Overlaid histograms of the log-prob margin chosen − rejected under reference and policy."""
    per_pair = per_pair or {}
    margins = {"reference": _differences(per_pair.get("reference_chosen"),
                                         per_pair.get("reference_rejected")),
               "policy": _differences(per_pair.get("policy_chosen"),
                                      per_pair.get("policy_rejected"))}
    if not any(margins.values()):
        return None
    figure, (axis,) = _figure(6, 3.4)
    everything = margins["reference"] + margins["policy"]
    bins = _bins(everything, 30)
    for name, color, kind in (("reference", REFERENCE_COLOR, "stepfilled"),
                              ("policy", POLICY_COLOR, "step")):
        if margins[name]:
            values = margins[name]
            mean = sum(values) / len(values)
            axis.hist(values, bins=bins, color=color, histtype=kind, linewidth=1.8,
                      alpha=0.5 if kind == "stepfilled" else 1.0,
                      label=f"{name} (mean {mean:+.2f}, n={len(values)})")
            axis.axvline(mean, color=color, linewidth=1.5, linestyle="--")
    axis.axvline(0, color="#333333", linewidth=0.8, linestyle=":")
    axis.set_xlabel("log π(chosen) − log π(rejected)  [nats, summed over tokens]", fontsize=9)
    axis.set_ylabel("pairs", fontsize=9)
    axis.legend(fontsize=8)
    return _png(figure)


def _bins(values: list[float], count: int) -> list[float]:
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    return [low + (high - low) * index / count for index in range(count + 1)]


def logp_shift_scatter(per_pair: Mapping[str, Sequence[Any]] | None) -> bytes | None:
    """Chosen vs rejected log-prob change per pair; the both-fall quadrant (x<0, y<0) shaded."""
    points = _finite_pairs((per_pair or {}).get("chosen_change"),
                           (per_pair or {}).get("rejected_change"))
    if not points:
        return None
    figure, (axis,) = _figure(5.2, 4.4)
    xs, ys = zip(*points, strict=True)
    span = max(max(map(abs, xs)), max(map(abs, ys)), 1e-3) * 1.08
    axis.fill_between([-span, 0], -span, 0, color=REJECTED_COLOR, alpha=0.08, linewidth=0)
    both_fall = sum(1 for x, y in points if x < 0 and y < 0) / len(points)
    axis.text(-span * 0.96, -span * 0.92, f"both fall: {100 * both_fall:.1f}%", fontsize=8,
              color=REJECTED_COLOR)
    correct = [x > y for x, y in points]  # the reward margin is β·(x − y)
    for flag, color, label in ((True, POLICY_COLOR, "reward margin > 0"),
                               (False, REJECTED_COLOR, "reward margin ≤ 0")):
        chosen = [point for point, ok in zip(points, correct, strict=True) if ok == flag]
        if chosen:
            axis.scatter(*zip(*chosen, strict=True), s=10, alpha=0.6, color=color, label=label)
    axis.plot([-span, span], [-span, span], color="#999999", linewidth=0.8, linestyle="--")
    axis.axhline(0, color="#555555", linewidth=0.6)
    axis.axvline(0, color="#555555", linewidth=0.6)
    axis.set(xlim=(-span, span), ylim=(-span, span))
    axis.set_xlabel("chosen: log π − log π_ref", fontsize=9)
    axis.set_ylabel("rejected: log π − log π_ref", fontsize=9)
    axis.legend(fontsize=8, loc="upper left")
    return _png(figure)


# ---- generation ----------------------------------------------------------------------------------

def refusal_bars(generation: Mapping[str, Any] | None) -> bytes | None:
    """Refusal (harmful) and over-refusal (benign) rates, reference beside policy, 95% CI bars."""
    groups = [(kind, label) for kind, label in (("harmful", "refusal on harmful prompts"),
                                                ("benign", "over-refusal on benign prompts"))
              if isinstance((generation or {}).get(kind), Mapping)]
    rates = {(kind, model): (generation or {})[kind].get(model) or {}
             for kind, _ in groups for model in ("reference", "policy")}
    if not any(as_number(rate.get("rate")) is not None for rate in rates.values()):
        return None
    figure, (axis,) = _figure(6, 3.4)
    width = 0.36
    for offset, model, color in ((-width / 2, "reference", REFERENCE_COLOR),
                                 (width / 2, "policy", POLICY_COLOR)):
        for index, (kind, _) in enumerate(groups):
            _rate_bar(axis, index + offset, rates[(kind, model)], color, width,
                      model if index == 0 else None)
    axis.set_xticks(range(len(groups)), [label for _, label in groups], fontsize=9)
    axis.set_ylim(0, 1.12)
    axis.set_ylabel("fraction of prompts refused", fontsize=9)
    axis.legend(fontsize=8, loc="upper right")
    return _png(figure)


def _rate_bar(axis: Any, x: float, rate: Mapping[str, Any], color: str, width: float,
              label: str | None) -> None:
    value = as_number(rate.get("rate"))
    if value is None:
        axis.text(x, 0.02, "n/a", ha="center", fontsize=8)
        return
    low, high = as_number(rate.get("low")), as_number(rate.get("high"))
    error = None
    if low is not None and high is not None:
        error = [[max(value - low, 0.0)], [max(high - value, 0.0)]]
    axis.bar([x], [value], width=width, color=color, yerr=error, capsize=4, label=label)
    axis.text(x, (high if high is not None else value) + 0.03, f"{100 * value:.0f}%",
              ha="center", fontsize=8)


def _heldout_lengths(axis: Any, per_pair: Mapping[str, Sequence[Any]]) -> None:
    chosen, rejected = _finite(per_pair.get("chosen_tokens")), _finite(per_pair.get("rejected_tokens"))
    bins = _bins(chosen + rejected, 30)
    for values, color, name, kind in ((chosen, CHOSEN_COLOR, "chosen", "stepfilled"),
                                      (rejected, REJECTED_COLOR, "rejected", "step")):
        if values:
            axis.hist(values, bins=bins, color=color, histtype=kind, linewidth=1.8,
                      alpha=0.5 if kind == "stepfilled" else 1.0,
                      label=f"{name} (mean {sum(values) / len(values):.0f})")
    axis.set_title("Held-out replies", fontsize=10)
    axis.set_xlabel("tokens", fontsize=9)
    axis.legend(fontsize=8)


def _generated_lengths(axis: Any, rows: Sequence[Mapping[str, Any]],
                       summary: Mapping[str, Any]) -> None:
    """Histograms from generations.jsonl rows when given, else the summary's mean/median/p90."""
    per_model = {model: _finite(row.get(f"{model}_tokens") for row in rows)
                 for model in ("reference", "policy")}
    colors = {"reference": REFERENCE_COLOR, "policy": POLICY_COLOR}
    if any(per_model.values()):
        bins = _bins(per_model["reference"] + per_model["policy"], 20)
        for model, values in per_model.items():
            if values:
                kind = "stepfilled" if model == "reference" else "step"
                axis.hist(values, bins=bins, color=colors[model], histtype=kind, linewidth=1.8,
                          alpha=0.5 if kind == "stepfilled" else 1.0,
                          label=f"{model} (mean {sum(values) / len(values):.0f})")
        axis.set_xlabel("tokens", fontsize=9)
    else:
        stats = ("mean", "median", "p90")
        for offset, model in ((-0.2, "reference"), (0.2, "policy")):
            values = [as_number((summary.get(model) or {}).get(stat)) or 0.0 for stat in stats]
            axis.bar([index + offset for index in range(3)], values, width=0.4,
                     color=colors[model], label=model)
        axis.set_xticks(range(3), list(stats), fontsize=9)
        axis.set_ylabel("tokens", fontsize=9)
    axis.set_title("Generated responses", fontsize=10)
    axis.legend(fontsize=8)


def length_distributions(per_pair: Mapping[str, Sequence[Any]] | None,
                         generation_lengths: Mapping[str, Any] | None,
                         generations: Sequence[Mapping[str, Any]] | None = None) -> bytes | None:
    """Held-out chosen/rejected token lengths, and generated response lengths per model."""
    per_pair, summary, rows = per_pair or {}, generation_lengths or {}, generations or ()
    has_heldout = bool(_finite(per_pair.get("chosen_tokens")) or
                       _finite(per_pair.get("rejected_tokens")))
    has_rows = any(as_number(row.get(f"{model}_tokens")) is not None
                   for row in rows for model in ("reference", "policy"))
    has_summary = any(isinstance(summary.get(model), Mapping) for model in ("reference", "policy"))
    panels = [has_heldout, has_rows or has_summary]
    if not any(panels):
        return None
    figure, axes = _figure(5.2 * sum(panels), 3.3, sum(panels))
    if has_heldout:
        _heldout_lengths(axes[0], per_pair)
    if panels[1]:
        _generated_lengths(axes[-1], rows, summary)
    return _png(figure)


def draw_all(results: Mapping[str, Any], metrics_rows: Sequence[Mapping[str, Any]] | None,
             generations: Sequence[Mapping[str, Any]] | None) -> dict[str, bytes | None]:
    """Every report figure by key, None where its data is missing."""
    heldout = results.get("heldout") if isinstance(results.get("heldout"), Mapping) else {}
    generation = results.get("generation") if isinstance(results.get("generation"), Mapping) else {}
    per_pair = heldout.get("per_pair")
    return {
        "training_curves": training_curves(metrics_rows),
        "margin_histogram": margin_histogram(per_pair),
        "logp_shift": logp_shift_scatter(per_pair),
        "refusal_bars": refusal_bars(generation),
        "lengths": length_distributions(per_pair, generation.get("lengths"), generations),
    }
