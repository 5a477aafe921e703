"""report.html of `prefalign rm eval`: the same family of page as `prefalign eval`'s report
(eval/report_html.py's blocks: inline CSS, embedded PNGs, no scripts, a Content-Security-Policy).

Sections: the run, the headline (accuracy beside the length baselines), training curves, the
pairs by source and category with the score distributions, calibration, the DPO run beside it,
and the worst pairs. A section without data says "not measured".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefalign.atomic import atomic_open
from prefalign.eval.formatting import UNNAMED, fmt_num, section
from prefalign.eval.plots import data_uri
from prefalign.eval.report import REPORT
from prefalign.eval.report_html import (
    Raw,
    figure,
    inline_dict,
    join,
    key_values,
    long_text,
    missing,
    page,
    table,
    tag,
)
from prefalign.eval.report_html import section as html_section
from prefalign.eval.reward_formatting import (
    SLICE_COLUMNS,
    calibration_rows,
    dpo_rows,
    headline_rows,
    slice_row,
)
from prefalign.eval.reward_plots import draw_reward_all

LIST_LIMIT = 25
CAPTIONS = {
    "training_curves": ("Training curves", "From the run's metrics.jsonl: loss, reward accuracy "
                        "and reward margin per step (train: raw and rolling mean; eval: markers)."),
    "score_distributions": ("Score distributions", "Rewards of the chosen and rejected replies, "
                            "and the margin r⁺ − r⁻ per pair (left of the dotted line: ranked "
                            "the wrong way)."),
    "margin_vs_length": ("Margin against length difference", "Per pair: the reward margin "
                         "against how much longer the chosen reply is; a strong slope means "
                         "the reward tracks length."),
    "reliability": ("Reliability diagram", "σ(r⁺ − r⁻) read in both orders against how often "
                    "the first reply was the preferred one, in 10 bins, before and after the "
                    "temperature fitted on the calibration split; bars: share of readings."),
    "dpo_comparison": ("Reward model against DPO", "Per pair: the DPO run's implicit-reward "
                       "margin (x) and the reward model's margin (y)."),
}
_NAV = (("headline", "Headline"), ("training", "Training"), ("pairs", "Pairs"),
        ("calibration", "Calibration"), ("dpo", "DPO beside it"), ("failures", "Worst pairs"))


def render_reward_report(results: Mapping[str, Any],
                         metrics_rows: Sequence[Mapping[str, Any]]) -> str:
    drawn = draw_reward_all(results, metrics_rows)
    figures = {key: figure(data_uri(png), *CAPTIONS[key]) for key, png in drawn.items()
               if png is not None}
    name = section(results, "run", "name") or UNNAMED
    body = join([
        _header(results, name),
        _headline(results),
        html_section("training", "Training curves", [figures.get("training_curves") or missing(
            "not measured: no metrics.jsonl rows with loss or accuracy")]),
        _pairs(results, figures),
        _calibration(results, figures),
        _dpo(results, figures),
        _failures(results),
        tag("footer", tag("p", f"prefalign {results.get('prefalign_version', '?')} · format "
                               f"{results.get('format', '?')}")),
    ])
    return page(f"prefalign rm eval — {name}", body, plots=len(figures))


def write_reward_report(out_dir: str | os.PathLike[str], results: Mapping[str, Any],
                        metrics_rows: Sequence[Mapping[str, Any]]) -> Path:
    """Render and write `out_dir/report.html` atomically; returns its path."""
    path = Path(out_dir) / REPORT
    text = render_reward_report(results, metrics_rows)
    with atomic_open(path) as handle:
        handle.write(text)
    return path


def _header(results: Mapping[str, Any], name: str) -> Raw:
    run = results.get("run") or {}
    params = inline_dict(run.get("loss_params"))
    subtitle = (f"{run.get('outcome', 'outcome unknown')} reward model · {run.get('loss', '?')} "
                f"({params}) · evaluated {results.get('created') or 'at an unknown time'}")
    nav = tag("nav", join(tag("a", title, href=f"#{anchor}") for anchor, title in _NAV))
    data = run.get("data") if isinstance(run.get("data"), Mapping) else {}
    rows = [("run dir", run.get("run_dir")), ("steps", run.get("steps")),
            ("base model", run.get("model_source")), ("LoRA", run.get("lora")),
            ("base weight hash", run.get("model_weight_hash")),
            ("chat template sha256", run.get("chat_template_sha256")),
            ("code version", run.get("code_version")),
            *((f"{split} data", f"{entry.get('source')} ({entry.get('fingerprint')})")
              for split, entry in data.items() if isinstance(entry, Mapping))]
    settings = results.get("settings") or {}
    setting_rows = [(key.replace("_", " "), value if not isinstance(value, list)
                     else ", ".join(map(str, value)) or None) for key, value in settings.items()]
    setting_rows.append(("evaluation time", f"{results.get('elapsed_seconds', '?')} s"))
    return join([tag("h1", f"prefalign rm eval — {name}"), tag("p", subtitle, class_="sub"), nav,
                 tag("div", join([tag("div", join([tag("h3", "Run"), key_values(
                     rows, mono=["run dir", "base weight hash", "chat template sha256",
                                 "code version"])])),
                                  tag("div", join([tag("h3", "Settings"),
                                                   key_values(setting_rows)]))]), class_="grid")])


def _headline(results: Mapping[str, Any]) -> Raw:
    overall = section(results, "pairs", "overall")
    if not isinstance(overall, Mapping):
        return html_section("headline", "Headline", [missing("pairs: not measured")])
    sets = section(results, "pairs", "sets") or []
    return html_section("headline", "Headline", [
        table(("pairs", "value"), headline_rows(overall), class_="headline", numeric=(1,)),
        tag("p", "Sets: " + "; ".join(f"{entry.get('name')} ({entry.get('pairs', '?')} pairs, "
                                      f"fingerprint {str(entry.get('fingerprint', '?'))[:16]})"
                                      for entry in sets), class_="note")])


def _pairs(results: Mapping[str, Any], figures: Mapping[str, Raw]) -> Raw:
    pairs = results.get("pairs")
    if not isinstance(pairs, Mapping):
        return html_section("pairs", "Pairs", [missing("not measured")])
    parts: list[Any] = [figures.get("score_distributions") or missing("score plots not drawn"),
                        figures.get("margin_vs_length") or missing("length plot not drawn")]
    distributions = pairs.get("distributions") or {}
    rows = [(name, *(fmt_num((distributions.get(name) or {}).get(stat)) for stat in
                     ("mean", "std", "min", "p10", "median", "p90", "max")))
            for name in ("chosen", "rejected", "margin")]
    parts += [tag("h3", "Score distributions"),
              table(("", "mean", "std", "min", "p10", "median", "p90", "max"), rows,
                    numeric=range(1, 8)),
              tag("p", "Correlation of a reply's reward with its length (all replies): "
                       f"{fmt_num(distributions.get('reward_vs_reply_length_corr'))}.",
                  class_="note")]
    for field, groups in (pairs.get("slices") or {}).items():
        parts += [tag("h3", f"By {field}"),
                  table((field, *SLICE_COLUMNS), [slice_row(str(key), value) for key, value
                                                  in (groups or {}).items()],
                        numeric=range(1, 7))]
    return html_section("pairs", "Pairs", parts)


def _calibration(results: Mapping[str, Any], figures: Mapping[str, Raw]) -> Raw:
    calibration = results.get("calibration")
    if not isinstance(calibration, Mapping) or "ece_before" not in calibration:
        note = calibration.get("note") if isinstance(calibration, Mapping) else None
        return html_section("calibration", "Calibration", [missing(note or "not measured")])
    parts = [tag("p", f"σ(r⁺ − r⁻) as the probability that the chosen reply is preferred; "
                      f"{calibration.get('split', '')}.", class_="note"),
             table(("", "before", "after temperature scaling"), calibration_rows(calibration),
                   class_="headline", numeric=(1, 2)),
             figures.get("reliability") or missing("reliability diagram not drawn")]
    if calibration.get("temperature_note"):
        parts.append(tag("p", calibration["temperature_note"], class_="note"))
    return html_section("calibration", "Calibration", parts)


def _dpo(results: Mapping[str, Any], figures: Mapping[str, Raw]) -> Raw:
    rows = dpo_rows(results)
    if not rows:
        return html_section("dpo", "DPO beside it", [missing("not measured: no --dpo run")])
    dpo = results.get("dpo") or {}
    return html_section("dpo", "DPO beside it", [
        tag("p", f"The DPO run {dpo.get('run_dir')} ({dpo.get('loss')}, "
                 f"{inline_dict(dpo.get('loss_params'))}): its implicit reward on the same "
                 "pairs.", class_="note"),
        table(("", "reward model", "DPO implicit reward"), rows, class_="headline",
              numeric=(1, 2)),
        figures.get("dpo_comparison") or missing("comparison not drawn")])


def _failures(results: Mapping[str, Any]) -> Raw:
    worst = section(results, "pairs", "worst_pairs")
    if not isinstance(worst, list):
        return html_section("failures", "Worst pairs", [missing("not measured")])
    if not worst:
        return html_section("failures", "Worst pairs", [
            tag("p", "None: every pair has a positive reward margin.", class_="note")])
    rows = [(Raw(join([tag("div", pair.get("pair_id"), class_="mono"),
                       tag("div", pair.get("source"), class_="note")])),
             long_text(pair.get("prompt")), long_text(pair.get("chosen")),
             long_text(pair.get("rejected")), fmt_num(pair.get("margin"), 3, signed=True))
            for pair in worst[:LIST_LIMIT]]
    return html_section("failures", "Worst pairs (most negative reward margins)", [
        table(("pair", "prompt (last user turn)", "chosen", "rejected", "margin"), rows,
              class_="texts", numeric=(4,), widths=("14%", "22%", "28%", "28%", "8%"))])
