"""Health checks: each fires on the history it describes and stays quiet otherwise."""

from __future__ import annotations

import math

import pytest

from prefalign.losses import make_loss
from prefalign.trainers.loop.health import (
    HealthMonitor,
    accuracy_saturated,
    identity_loss,
    likelihood_displacement,
    loss_stuck_at_identity,
)


def _history(**series):
    """Entries step 1..n from equal-length lists, e.g. loss=[...]."""
    length = len(next(iter(series.values())))
    return [{"step": i + 1, **{k: v[i] for k, v in series.items()}} for i in range(length)]


def test_likelihood_displacement_needs_both_falling_for_the_whole_window():
    falling = _history(**{"logps/chosen_change": [-0.1, -0.2, -0.4, -0.6, -0.9],
                          "logps/rejected_change": [-0.3, -0.8, -1.5, -2.0, -3.0]})
    assert "likelihood displacement" in likelihood_displacement(falling)
    assert likelihood_displacement(falling[:4]) is None  # not yet 5 logs
    chosen_up = _history(**{"logps/chosen_change": [-0.1, 0.1, 0.2, 0.3, 0.4],
                            "logps/rejected_change": [-0.3, -0.8, -1.5, -2.0, -3.0]})
    assert likelihood_displacement(chosen_up) is None
    recovering = _history(**{"logps/chosen_change": [-0.9, -0.6, -0.4, -0.2, -0.1],
                             "logps/rejected_change": [-0.3, -0.8, -1.5, -2.0, -3.0]})
    assert likelihood_displacement(recovering) is None
    no_reference = _history(loss=[0.6] * 5)
    assert likelihood_displacement(no_reference) is None


def test_loss_stuck_at_ln2_after_warmup():
    ln2 = math.log(2)
    stuck = _history(loss=[ln2 + 1e-4] * 8)
    assert "identical to the reference" in loss_stuck_at_identity(stuck, ln2, after_step=3)
    assert loss_stuck_at_identity(stuck, ln2, after_step=4) is None  # 4 logs after warm-up
    moving = _history(loss=[ln2, ln2, ln2, ln2, 0.68, 0.67])
    assert loss_stuck_at_identity(moving, ln2, after_step=0) is None
    assert loss_stuck_at_identity(stuck, None, after_step=0) is None  # no identity value


def test_identity_loss_is_ln2_for_dpo_and_unknown_where_it_depends_on_the_data():
    assert identity_loss(make_loss("dpo", beta=0.1)) == pytest.approx(math.log(2))
    assert identity_loss(make_loss("dpo", beta=0.5, label_smoothing=0.2)) == \
        pytest.approx(math.log(2))
    assert identity_loss(make_loss("ipo", beta=0.1)) == pytest.approx(25.0)  # (1/(2β))²
    assert identity_loss(make_loss("rpo")) is None  # its NLL term depends on the log-probs
    assert identity_loss(make_loss("simpo")) is None  # no reference


def test_accuracy_saturated_only_when_heldout_lags():
    perfect = _history(**{"rewards/accuracy": [1.0] * 5})
    assert "overfitting" in accuracy_saturated(perfect, {"accuracy": 0.7})
    assert accuracy_saturated(perfect, {"accuracy": 0.85}) is None
    assert accuracy_saturated(perfect, None) is None
    almost = _history(**{"rewards/accuracy": [1.0, 1.0, 0.75, 1.0, 1.0]})
    assert accuracy_saturated(almost, {"accuracy": 0.5}) is None


def test_monitor_reports_each_problem_once():
    monitor = HealthMonitor(math.log(2), warmup_steps=0)
    stuck = _history(loss=[math.log(2)] * 5)
    first = monitor.check(5, stuck, None)
    assert [e.name for e in first] == ["loss_stuck_at_identity"] and first[0].step == 5
    assert monitor.check(6, stuck + _history(loss=[math.log(2)]), None) == []
    resumed = HealthMonitor(math.log(2), warmup_steps=0, fired=monitor.fired)
    assert resumed.check(7, stuck, None) == []
