"""The online health checks: tied groups, completion length drift, reward up while held-out
falls; each fires on the history that shows it and not on a near miss."""

from __future__ import annotations

from prefalign.trainers.loop.health import (
    completion_length_drift,
    groups_all_tied,
    reward_up_heldout_down,
)


def _history(key, values):
    return [{"step": i + 1, key: v} for i, v in enumerate(values)]


def test_groups_all_tied_needs_every_group_tied_for_the_window():
    assert groups_all_tied(_history("groups/tied_fraction", [1.0] * 5)) is not None
    assert groups_all_tied(_history("groups/tied_fraction", [1.0, 1.0, 0.75, 1.0, 1.0])) is None
    assert groups_all_tied(_history("groups/tied_fraction", [1.0] * 4)) is None


def test_length_drift_needs_a_steady_move_by_the_factor():
    assert "grown" in completion_length_drift(_history("completions/length_mean",
                                                       [10, 11, 13, 14, 15]))
    assert "shrunk" in completion_length_drift(_history("completions/length_mean",
                                                        [30, 25, 22, 21, 20]))
    assert completion_length_drift(_history("completions/length_mean", [10, 11, 12, 13, 14])) is None
    assert completion_length_drift(_history("completions/length_mean", [10, 16, 13, 14, 15])) is None


def test_reward_up_while_heldout_down():
    rising = _history("reward/mean", [0.1, 0.2, 0.3, 0.4, 0.5])
    assert reward_up_heldout_down(rising, [0.6, 0.5]) is not None
    assert reward_up_heldout_down(rising, [0.5, 0.6]) is None
    assert reward_up_heldout_down(rising, [0.5]) is None
    falling = _history("reward/mean", [0.5, 0.4, 0.3, 0.2, 0.1])
    assert reward_up_heldout_down(falling, [0.6, 0.5]) is None
