"""Calibration of a reward model's preference probabilities p = σ(r⁺ − r⁻): expected calibration
error, the reliability diagram's bins, and temperature scaling.

A data set's pairs all come with the chosen side first, so every label is "chosen preferred"
and a reliability diagram of p against it would be a single row of ones. So each pair is read
in both orders, (p, 1) and (1 − p, 0): the probability that the first side is preferred
against whether it was. The diagram is then symmetric about (0.5, 0.5), and the ECE over its
10 equal-width bins equals the classic one over the confidence max(p, 1 − p) and whether the
model's pick was right (Guo et al. 2017, "On Calibration of Modern Neural Networks"), binned at
0.05 steps over [0.5, 1].

Temperature scaling (Guo et al. 2017, §4.2): p_T = σ((r⁺ − r⁻)/T), T fitted on a calibration
split by minimising the negative log-likelihood there; it changes no ranking, so accuracy stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

BINS = 10
MAX_SCALE = 1e4  # 1/T beyond this (T < 1e-4) is reported as the bound
_BISECTIONS = 200


@dataclass(frozen=True)
class ReliabilityBin:
    """One equal-width bin of predicted probability [low, high): how many of the 2N readings
    fell in it, their mean predicted probability, and how often the first side was preferred."""

    low: float
    high: float
    count: int
    mean_predicted: float | None
    observed: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        return {"low": self.low, "high": self.high, "count": self.count,
                "mean_predicted": self.mean_predicted, "observed": self.observed}


def both_orders(probabilities: Tensor) -> tuple[Tensor, Tensor]:
    """(2N,) predicted probabilities p and 1 − p, and (2N,) labels 1 and 0."""
    p = probabilities.double()
    return torch.cat([p, 1 - p]), torch.cat([torch.ones_like(p), torch.zeros_like(p)])


def reliability_bins(probabilities: Tensor, bins: int = BINS) -> list[ReliabilityBin]:
    """The reliability diagram of N pairs' p = σ(r⁺ − r⁻), each pair read in both orders.
    Bin b holds predictions in [b/bins, (b+1)/bins), the last one 1.0 too (a p exactly on an
    edge and its 1 − p can then sit in bins that are not mirror images; real margins do not
    land there, and p = 0.5 keeps both its readings in bin bins/2)."""
    predicted, labels = both_orders(probabilities)
    index = (predicted * bins).floor().long().clamp(0, bins - 1)  # (2N,)
    rows = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        rows.append(ReliabilityBin(
            b / bins, (b + 1) / bins, count,
            predicted[members].mean().item() if count else None,
            labels[members].mean().item() if count else None))
    return rows


def expected_calibration_error(probabilities: Tensor, bins: int = BINS) -> float:
    """ECE = Σ_b (n_b / 2N)·|observed_b − mean predicted_b| over `reliability_bins`.

    Example: p = (0.9, 0.6, 0.3) reads as (0.9, 1), (0.1, 0), (0.6, 1), (0.4, 0), (0.3, 1),
    (0.7, 0), one per bin; the gaps are 0.1, 0.1, 0.4, 0.4, 0.7, 0.7, so ECE = 2.4/6 = 0.4
    (the confidence form: (|1 − 0.9| + |1 − 0.6| + |0 − 0.7|)/3 = 0.4).
    """
    total = 2 * probabilities.numel()
    if total == 0:
        return math.nan
    return sum(row.count / total * abs(row.observed - row.mean_predicted)
               for row in reliability_bins(probabilities, bins) if row.count)


def preference_nll(margins: Tensor, temperature: float = 1.0) -> float:
    """Mean −log σ((r⁺ − r⁻)/T) over the pairs (the same in both orders)."""
    scale = 0.0 if math.isinf(temperature) else 1.0 / temperature
    return torch.nn.functional.softplus(-margins.double() * scale).mean().item()


def fit_temperature(margins: Tensor) -> float:
    """The T > 0 minimising `preference_nll(margins, T)` (inf when no positive scale beats
    p = 0.5 everywhere, i.e. the margins average ≤ 0; 1/MAX_SCALE when every margin is > 0,
    where the likelihood keeps rising as T falls).

    The NLL is convex in s = 1/T, with derivative f′(s) = −mean(d·σ(−s·d)) rising from
    −mean(d)/2 at s = 0: the minimum is the root of f′, found by bisection.
    """
    d = margins.double()
    if d.numel() == 0:
        raise ValueError("fit_temperature: no pairs to fit on")

    def slope(s: float) -> float:
        return -(d * torch.sigmoid(-s * d)).mean().item()

    if slope(0.0) >= 0:
        return math.inf
    if not (d < 0).any():  # the likelihood rises for ever as T falls
        return 1.0 / MAX_SCALE
    high = 1.0
    while slope(high) < 0:
        if high >= MAX_SCALE:
            return 1.0 / MAX_SCALE
        high = min(high * 2, MAX_SCALE)
    low = 0.0
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        low, high = (middle, high) if slope(middle) < 0 else (low, middle)
    return 1.0 / ((low + high) / 2)


def scaled_probabilities(margins: Tensor, temperature: float) -> Tensor:
    """σ((r⁺ − r⁻)/T), (N,) float64; T = inf gives 0.5 everywhere."""
    scale = 0.0 if math.isinf(temperature) else 1.0 / temperature
    return torch.sigmoid(margins.double() * scale)


def calibration_summary(calibration_margins: Tensor, evaluated_margins: Tensor) -> dict:
    """Temperature fitted on the calibration margins; ECE, NLL and the reliability bins of the
    evaluated margins before (T = 1) and after scaling."""
    temperature = fit_temperature(calibration_margins)
    before = scaled_probabilities(evaluated_margins, 1.0)
    after = scaled_probabilities(evaluated_margins, temperature)
    return {
        "bins": BINS,
        "temperature": None if math.isinf(temperature) else temperature,
        "temperature_note": _temperature_note(temperature),
        "n_calibration": int(calibration_margins.numel()),
        "n_evaluated": int(evaluated_margins.numel()),
        "ece_before": expected_calibration_error(before),
        "ece_after": expected_calibration_error(after),
        "nll_before": preference_nll(evaluated_margins, 1.0),
        "nll_after": preference_nll(evaluated_margins, temperature),
        "reliability_before": [row.to_dict() for row in reliability_bins(before)],
        "reliability_after": [row.to_dict() for row in reliability_bins(after)],
    }


def _temperature_note(temperature: float) -> str | None:
    if math.isinf(temperature):
        return ("the calibration margins average ≤ 0: no positive temperature beats p = 0.5, so "
                "the scaled probabilities are all 0.5")
    if temperature <= 1.0 / MAX_SCALE:
        return "every calibration margin is positive: T is at its lower bound"
    return None
