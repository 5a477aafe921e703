"""Calibration of σ(r⁺ − r⁻): reliability bins and ECE worked by hand, temperature scaling."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.eval.calibration import (
    MAX_SCALE,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    preference_nll,
    reliability_bins,
)


def test_ece_by_hand():
    """p = (0.92, 0.64, 0.27), read in both orders: (0.92, 1) (0.08, 0) (0.64, 1) (0.36, 0)
    (0.27, 1) (0.73, 0), one per bin; gaps 0.08 0.08 0.36 0.36 0.73 0.73, so ECE = 2.34 / 6
    = 0.39 = the confidence form (|1 − 0.92| + |1 − 0.64| + |0 − 0.73|) / 3."""
    probabilities = torch.tensor([0.92, 0.64, 0.27], dtype=torch.float64)
    assert expected_calibration_error(probabilities) == pytest.approx(0.39)


def test_bins_by_hand():
    """p = (0.95, 0.85, 0.55, 0.05): bin 9 holds 0.95 (label 1) and 0.95 (the last pair's
    other order, label 0): mean 0.95, observed 0.5; bin 8 holds 0.85 (1); bin 5 holds 0.55 (1);
    bins 0, 1 and 4 the mirrored readings 0.05 (1 − 0.95, label 0) and 0.05 (label 1), 0.15 (0),
    0.45 (0). ECE = [2·|0.5 − 0.95| + |1 − 0.85| + |0 − 0.15| + |1 − 0.55| + |0 − 0.45|
    + 2·|0.5 − 0.05|] / 8 = (0.9 + 0.15 + 0.15 + 0.45 + 0.45 + 0.9) / 8 = 0.375."""
    rows = reliability_bins(torch.tensor([0.95, 0.85, 0.55, 0.05], dtype=torch.float64))
    counts = [row.count for row in rows]
    assert counts == [2, 1, 0, 0, 1, 1, 0, 0, 1, 2]
    assert rows[9].mean_predicted == pytest.approx(0.95) and rows[9].observed == 0.5
    assert rows[8].observed == 1.0 and rows[1].observed == 0.0
    assert rows[2].mean_predicted is None and rows[2].observed is None
    assert expected_calibration_error(torch.tensor([0.95, 0.85, 0.55, 0.05],
                                                   dtype=torch.float64)) == pytest.approx(0.375)


def test_the_diagram_is_symmetric_and_p_1_is_in_the_last_bin():
    rows = reliability_bins(torch.tensor([1.0, 0.0, 0.73], dtype=torch.float64))
    assert [row.count for row in rows] == [2, 0, 1, 0, 0, 0, 0, 1, 0, 2]
    assert rows[9].mean_predicted == 1.0 and rows[9].observed == 0.5


def test_a_perfectly_calibrated_model_scores_zero():
    """Every pair at p = 0.75, and every chosen reply preferred: bin 7 holds 0.75 → 1 four
    times, bin 2 0.25 → 0 four times: ECE 0.25 (too timid). At p = 0.5 the readings (0.5, 1)
    and (0.5, 0) share one bin: ECE 0 — a model that knows nothing and says so."""
    assert expected_calibration_error(torch.full((4,), 0.75)) == pytest.approx(0.25)
    assert expected_calibration_error(torch.full((4,), 0.5)) == pytest.approx(0.0)


def test_temperature_by_hand():
    """Margins (2, 2, 2, −2): the NLL's slope in s = 1/T vanishes where 3·σ(−2s) = σ(2s), i.e.
    3(1 + e^−2s) = 1 + e^2s, u = e^2s: u² − 2u − 3 = 0, u = 3, s = ln 3 / 2, T = 2 / ln 3
    = 1.820478; then p = σ(2/T) = σ(ln 3) = 0.75, the share of pairs ranked right."""
    margins = torch.tensor([2.0, 2.0, 2.0, -2.0])
    temperature = fit_temperature(margins)
    assert temperature == pytest.approx(2 / math.log(3), rel=1e-9)
    assert torch.sigmoid(torch.tensor(2 / temperature)).item() == pytest.approx(0.75)
    best = preference_nll(margins, temperature)
    assert best < preference_nll(margins, temperature * 1.05)
    assert best < preference_nll(margins, temperature / 1.05)


def test_temperature_scales_with_the_margins():
    generator = torch.Generator().manual_seed(0)
    margins = torch.randn(200, generator=generator, dtype=torch.float64) + 0.4
    assert fit_temperature(3 * margins) == pytest.approx(3 * fit_temperature(margins), rel=1e-6)


def test_temperature_bounds():
    assert fit_temperature(torch.tensor([1.0, 2.0])) == pytest.approx(1 / MAX_SCALE)
    assert math.isinf(fit_temperature(torch.tensor([1.0, -2.0])))  # mean margin ≤ 0
    with pytest.raises(ValueError, match="no pairs"):
        fit_temperature(torch.tensor([]))


def test_summary_fits_on_one_split_and_measures_on_the_other():
    """An over-confident model (margins 10× too large) gets T ≈ 10 and a lower ECE; no ranking
    changes, so the share of p > 0.5 stays."""
    generator = torch.Generator().manual_seed(1)
    true = torch.randn(4000, generator=generator, dtype=torch.float64) + 0.5
    preferred = torch.rand(4000, generator=generator, dtype=torch.float64) < torch.sigmoid(true)
    margins = torch.where(preferred, true, -true) * 10  # as if the chosen side were recorded
    summary = calibration_summary(margins[:2000], margins[2000:])
    assert summary["temperature"] == pytest.approx(10, rel=0.15)
    assert summary["ece_after"] < summary["ece_before"] / 3
    assert summary["nll_after"] < summary["nll_before"]
    assert summary["n_calibration"] == summary["n_evaluated"] == 2000
    assert len(summary["reliability_before"]) == len(summary["reliability_after"]) == 10
