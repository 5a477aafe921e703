"""LOSSES, make_loss validation, weighted mixes, and the torch-only import contract."""

from __future__ import annotations

import inspect
import math
import subprocess
import sys

import pytest
import torch
from losses_helpers import as_lists, gradcheck_policy, neg_log_sigmoid, pair, random_pairs

from prefalign.losses import (
    LOSSES,
    ConfiguredLoss,
    LossOutput,
    PairLogps,
    dpo_loss,
    make_loss,
    mix_losses,
    simpo_loss,
)


def test_losses_index_says_reference_and_reduction():
    table = {name: (spec.needs_reference, spec.logps, spec.paired) for name, spec in LOSSES.items()}
    assert table == {
        "dpo": (True, "sum", True),
        "robust": (True, "sum", True),
        "ipo": (True, "mean", True),
        "hinge": (True, "sum", True),
        "simpo": (False, "mean", True),
        "orpo": (False, "mean", True),
        "rpo": (True, "sum", True),
        "apo_zero": (True, "sum", True),
        "apo_down": (True, "sum", True),
        "kto": (True, "sum", False),
    }
    for spec in LOSSES.values():
        assert spec.paper and spec.fn.__doc__ and "et al." in spec.fn.__doc__


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("dpo", {"beta": 0.0}, r"dpo: beta must be a finite number in \(0.0, inf\), got 0.0"),
        ("dpo", {"beta": -1}, r"beta .* got -1"),
        ("dpo", {"beta": math.nan}, r"beta .* got nan"),
        ("dpo", {"beta": math.inf}, r"beta .* got inf"),
        ("dpo", {"beta": True}, r"beta .* got True"),
        ("dpo", {"beta": "0.1"}, r"beta .* got '0.1'"),
        (
            "dpo",
            {"label_smoothing": 0.5},
            r"label_smoothing must be a finite number in \[0.0, 0.5\)",
        ),
        ("dpo", {"label_smoothing": -0.1}, r"label_smoothing .* \[0.0, 0.5\)"),
        ("dpo", {"length_normalized": 1}, r"length_normalized must be true or false"),
        ("robust", {"flip_rate": 0.5}, r"robust: flip_rate .* \[0.0, 0.5\)"),
        ("ipo", {"beta": 0}, r"ipo: beta"),
        ("hinge", {"beta": -0.1}, r"hinge: beta"),
        ("simpo", {"gamma": -0.5}, r"simpo: gamma .* \[0.0, inf\)"),
        ("orpo", {"beta": 0}, r"orpo: beta"),
        ("rpo", {"alpha": -1.0}, r"rpo: alpha .* \[0.0, inf\)"),
        ("apo_zero", {"beta": 0}, r"apo_zero: beta"),
        ("kto", {"undesirable_weight": 0.0}, r"kto: undesirable_weight .* \(0.0, inf\)"),
        (
            "dpo",
            {"gamma": 1.0},
            r"dpo: unknown hyper-parameter\(s\) gamma; this loss takes beta, label_smoothing, length_normalized",
        ),
        ("dpo_v2", {}, r"unknown loss 'dpo_v2'; choose one of apo_down, apo_zero, dpo"),
    ],
)
def test_make_loss_rejects_bad_configuration(name, params, message):
    with pytest.raises(ValueError, match=message):
        make_loss(name, **params)


def test_loss_functions_validate_too():
    policy, reference = random_pairs(2, seed=50)
    with pytest.raises(ValueError, match=r"label_smoothing .* got 0.7"):
        dpo_loss(policy, reference, label_smoothing=0.7)
    with pytest.raises(ValueError, match=r"simpo: beta"):
        simpo_loss(policy, beta=0.0)


def test_values_are_stored_as_their_declared_type():
    """An int given for a float hyper-parameter becomes a float, in make_loss and direct calls."""
    policy, reference = random_pairs(3, seed=56)
    loss = make_loss("simpo", beta=2, gamma=0)
    assert dict(loss.params) == {"beta": 2.0, "gamma": 0.0}
    assert all(type(value) is float for value in loss.params.values())
    torch.testing.assert_close(
        dpo_loss(policy, reference, beta=1).losses, dpo_loss(policy, reference, beta=1.0).losses
    )


def test_every_built_in_declares_each_hyper_parameter_with_its_bounds():
    """Each keyword-only parameter with a default is declared: a bool, or a number with a range
    that holds its default (so no built-in takes an unbounded number)."""
    for name, spec in LOSSES.items():
        signature = inspect.signature(spec.fn).parameters.values()
        keyword = {p.name: p.default for p in signature if p.kind is p.KEYWORD_ONLY}
        with_defaults = {k: v for k, v in keyword.items() if v is not inspect.Parameter.empty}
        assert spec.defaults == with_defaults, name
        for parameter in spec.hyperparameters.values():
            assert parameter.kind is bool or parameter.bounds is not None, (name, parameter)
            assert parameter.bounds is None or parameter.bounds.contains(parameter.default)


def test_make_loss_fills_defaults_and_calls_the_function():
    policy, reference = random_pairs(4, seed=51)
    loss = make_loss("dpo", beta=0.3)
    assert isinstance(loss, ConfiguredLoss)
    assert dict(loss.params) == {"beta": 0.3, "label_smoothing": 0.0, "length_normalized": False}
    assert loss.needs_reference and loss.logps == "sum"
    assert make_loss("dpo", length_normalized=True).logps == "mean"
    torch.testing.assert_close(
        loss(policy, reference).losses, dpo_loss(policy, reference, beta=0.3).losses
    )
    with pytest.raises(ValueError, match="dpo: this loss needs reference log-probs"):
        loss(policy)
    with pytest.raises(TypeError):
        loss.params["beta"] = 1.0  # the configuration is read-only


def test_every_paired_loss_runs_through_make_loss():
    policy, reference = random_pairs(3, seed=52)
    for name, spec in LOSSES.items():
        if spec.paired:
            out = make_loss(name)(policy, reference)
            assert out.losses.shape == (3,) and torch.isfinite(out.losses).all(), name


def test_mix_hand_computed():
    """policy (−5, −7), reference (−6, −6), counts (2, 2).
    DPO β = 0.5: h = 2 → log(1 + e^−1) = 0.3132617
    SimPO β = 2, γ = 1: means −2.5, −3.5 → r = −5, −7 → z = 2 − 1 = 1 → 0.3132617
    0.75·0.3132617 + 2·0.3132617 = 2.75·0.3132617 = 0.8614696; rewards from DPO (0.5, −0.5)
    """
    mix = mix_losses(
        [(0.75, make_loss("dpo", beta=0.5)), (2.0, make_loss("simpo", beta=2.0, gamma=1.0))]
    )
    out = mix(pair([-5.0], [-7.0], [2], [2]), pair([-6.0], [-6.0]))
    assert out.losses.item() == pytest.approx(2.75 * 0.3132616875, abs=1e-9)
    assert out.chosen_rewards.item() == pytest.approx(
        0.5
    ) and out.rejected_rewards.item() == pytest.approx(-0.5)
    assert set(out.terms) == {"dpo", "simpo"}
    assert mix.needs_reference


def test_mix_gradient_is_the_weighted_sum_and_terms_are_named():
    policy, reference = random_pairs(4, seed=53, grad=True)
    parts = [(0.5, make_loss("dpo")), (0.25, make_loss("dpo", beta=1.0)), (1.0, make_loss("rpo"))]
    mixed = torch.autograd.grad(mix_losses(parts)(policy, reference).losses.sum(), [policy.chosen])[
        0
    ]
    separate = sum(
        w * torch.autograd.grad(loss(policy, reference).losses.sum(), [policy.chosen])[0]
        for w, loss in parts
    )
    torch.testing.assert_close(mixed, separate)
    terms = mix_losses(parts)(policy, reference).terms
    assert {"dpo.0", "dpo.1", "rpo", "rpo/nll", "rpo/dpo"} == set(terms)


def test_mix_gradcheck_and_plain_python():
    """L = 0.5·DPO(β = 0.2) + 1.5·IPO(τ = 0.4), written out per pair."""
    policy, reference = random_pairs(4, seed=55, grad=True)
    mix = mix_losses([(0.5, make_loss("dpo", beta=0.2)), (1.5, make_loss("ipo", beta=0.4))])
    gradcheck_policy(lambda p: mix(p, reference).losses, policy)
    out = mix(policy, reference).losses
    for i, ((pw, pl, nw, nl), (rw, rl, _, _)) in enumerate(
        zip(as_lists(policy), as_lists(reference), strict=True)
    ):
        dpo = neg_log_sigmoid(0.2 * ((pw - rw) - (pl - rl)))
        ipo = ((pw - rw) / nw - (pl - rl) / nl - 1 / 0.8) ** 2
        assert out[i].item() == pytest.approx(0.5 * dpo + 1.5 * ipo, rel=1e-12)


def test_mix_rejects_bad_components():
    with pytest.raises(ValueError, match="at least one"):
        mix_losses([])
    with pytest.raises(
        ValueError, match=r"mix: weight of component 1 must be a finite number in \(0.0, inf\)"
    ):
        mix_losses([(1.0, make_loss("dpo")), (0.0, make_loss("ipo"))])
    with pytest.raises(ValueError, match="kto is unpaired"):
        mix_losses([(1.0, make_loss("kto"))])
    with pytest.raises(ValueError, match="must come from make_loss"):
        mix_losses([(1.0, dpo_loss)])


def test_reference_free_mix_needs_no_reference():
    mix = mix_losses([(1.0, make_loss("simpo")), (1.0, make_loss("orpo"))])
    assert not mix.needs_reference
    policy, _ = random_pairs(2, seed=54)
    assert mix(policy).losses.shape == (2,)


def test_losses_import_with_torch_alone_and_set_nothing():
    """`prefalign.losses` needs torch only and leaves the process as it found it (no
    environment variables, such as the oneDNN route's cache settings)."""
    code = (
        "import os, sys\n"
        "before = dict(os.environ)\n"
        "import prefalign.losses\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in {'transformers', 'tokenizers', 'datasets', 'yaml'}"
        " or m.startswith(('prefalign.data', 'prefalign.config', 'prefalign.engine',"
        " 'prefalign.trainers'))]\n"
        "assert not heavy, heavy\n"
        "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pair_logps_and_loss_output_check_shapes():
    one, two = torch.zeros(1), torch.zeros(2)
    with pytest.raises(
        ValueError, match=r"chosen and rejected must both have shape \(B,\), got \(2,\) and \(1,\)"
    ):
        PairLogps(two, one)
    with pytest.raises(ValueError, match="give both chosen_count and rejected_count, or neither"):
        PairLogps(two, two, chosen_count=torch.ones(2))
    with pytest.raises(ValueError, match=r"rejected_count must have shape \(2,\), got \(1,\)"):
        PairLogps(two, two, torch.ones(2), torch.ones(1))
    with pytest.raises(ValueError, match="LossOutput: losses and rewards must share one shape"):
        LossOutput(two, two, one)
