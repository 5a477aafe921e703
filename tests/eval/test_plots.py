"""Report figures: each is a PNG when its data is present and None when it is not; the training
curves read metrics.jsonl exactly as the run's MetricsLogger writes it."""

from __future__ import annotations

import json
import math

import pytest

from eval.report_fixture import build_generations, build_metrics_rows, build_results
from prefalign.engine.logger import MetricsLogger
from prefalign.eval import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk (bytes 16-24 of any PNG)."""
    assert png.startswith(PNG_MAGIC)
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_metric_series_reads_the_loggers_own_file(tmp_path):
    """Rows written by MetricsLogger (split field, "nan" strings) become per-split series, with
    train's rewards/accuracy and eval's accuracy under one name."""
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(1, {"loss": 0.69, "rewards/accuracy": 0.5, "grad_norm": math.nan})
    logger.log(2, {"loss": 0.60, "rewards/accuracy": 0.75})
    logger.log(2, {"loss": 0.65, "accuracy": 0.55}, split="eval")
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    series = plots.metric_series(rows)
    assert series[("train", "loss")] == [(1, 0.69), (2, 0.60)]
    assert series[("train", "accuracy")] == [(1, 0.5), (2, 0.75)]
    assert series[("eval", "accuracy")] == [(2, 0.55)]
    assert ("train", "grad_norm") not in series  # only value was "nan"
    assert plots.training_curves(rows).startswith(PNG_MAGIC)


def test_metric_series_accepts_prefixed_names():
    rows = [{"step": 5, "train/loss": 0.5, "eval/accuracy": 0.6, "eval/loss": None}]
    assert plots.metric_series(rows) == {("train", "loss"): [(5, 0.5)],
                                         ("eval", "accuracy"): [(5, 0.6)]}


def test_every_figure_drawn_from_the_fixture():
    drawn = plots.draw_all(build_results(), build_metrics_rows(), build_generations())
    assert set(drawn) == {"training_curves", "margin_histogram", "logp_shift", "refusal_bars",
                          "lengths"}
    for key, png in drawn.items():
        width, height = _png_size(png)
        assert width > 200 and height > 200, key


@pytest.mark.parametrize("draw", [
    lambda: plots.training_curves([]),
    lambda: plots.training_curves([{"step": 1, "split": "train", "lr": 0.1}]),
    lambda: plots.margin_histogram(None),
    lambda: plots.margin_histogram({"policy_chosen": [None], "policy_rejected": [1.0]}),
    lambda: plots.logp_shift_scatter({"chosen_change": [], "rejected_change": []}),
    lambda: plots.refusal_bars({}),
    lambda: plots.refusal_bars({"harmful": {"reference": {"n": 0, "rate": None}}}),
    lambda: plots.length_distributions(None, None, None),
    lambda: plots.length_distributions({"chosen_tokens": [float("nan")]}, {}, []),
], ids=["no-rows", "no-plotted-metric", "no-pairs", "null-logps", "empty-changes",
        "no-generation", "null-rate", "no-lengths", "nan-lengths"])
def test_missing_data_gives_none(draw):
    assert draw() is None


def test_partial_data_still_draws():
    """Null entries are skipped point by point; one model's rate is enough for the bars; the
    generated-length panel falls back to the summary statistics without generations rows."""
    per_pair = {"chosen_change": [0.5, None, -1.0], "rejected_change": [-0.5, 2.0, float("nan")],
                "chosen_tokens": [10, 20], "rejected_tokens": [12, None]}
    assert plots.logp_shift_scatter(per_pair).startswith(PNG_MAGIC)
    generation = {"benign": {"policy": {"n": 4, "rate": 0.25, "low": None, "high": None}}}
    assert plots.refusal_bars(generation).startswith(PNG_MAGIC)
    lengths = {"policy": {"mean": 30.0, "median": 28, "p90": 60}}
    one_panel = plots.length_distributions(None, lengths, [])
    two_panels = plots.length_distributions(per_pair, lengths, [])
    assert _png_size(two_panels)[0] > _png_size(one_panel)[0]


def test_data_uri_round_trips():
    import base64

    png = plots.margin_histogram({"reference_chosen": [1.0, 2.0], "reference_rejected": [0.0, 3.0]})
    uri = plots.data_uri(png)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == png
