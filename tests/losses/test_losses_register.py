"""`register`: a user's loss joins LOSSES, is validated by make_loss from its own annotations,
loads from a config by name and trains; bad registrations are refused with a clear message."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import pytest
import torch
import torch.nn.functional as F
from losses_helpers import pair, random_pairs

from prefalign.config import ConfigError, config_from_dict
from prefalign.engine.manifest import read_manifest
from prefalign.losses import (
    LOSSES,
    LossOutput,
    PairLogps,
    Positive,
    Range,
    kto_loss,
    make_loss,
    register,
)
from prefalign.trainers.dpo.train import train
from run_helpers import logged_losses, tiny_config
from tiny_models import tiny_model_dir

Scale = Annotated[float, Range(0.0, 10.0, open_low=True, open_high=False)]  # (0, 10]


def scaled_dpo_loss(
    policy: PairLogps,
    reference: PairLogps,
    *,
    beta: Positive = 0.1,
    scale: Scale = 1.0,
    reduce: Literal["sum", "mean"] = "sum",
) -> LossOutput:
    """DPO with its loss (and so its gradient) multiplied by `scale`: L = −s·log σ(β·h).

    With reduce="mean" each log-ratio is divided by its response length first.
    """
    chosen = policy.chosen - reference.chosen  # (B,)
    rejected = policy.rejected - reference.rejected  # (B,)
    if reduce == "mean":
        chosen, rejected = chosen / policy.chosen_count, rejected / policy.rejected_count
    losses = -scale * F.logsigmoid(beta * (chosen - rejected))
    return LossOutput(losses, (beta * chosen).detach(), (beta * rejected).detach())


def squared_hinge_loss(
    policy: PairLogps,
    reference: PairLogps,
    *,
    beta: Positive = 0.1,
    power: Annotated[int, Range(1, 3, open_high=False)] = 2,
) -> LossOutput:
    """L = max(0, 1 − β·h)^p: the hinge loss, squared by default (smooth at the margin)."""
    chosen = policy.chosen - reference.chosen
    rejected = policy.rejected - reference.rejected
    losses = torch.relu(1 - beta * (chosen - rejected)) ** power
    return LossOutput(losses, (beta * chosen).detach(), (beta * rejected).detach())


def clamped_simpo_loss(policy: PairLogps, *, low: float = -5.0, high: float = 5.0) -> LossOutput:
    """Reference-free: L = −log σ(clamp(m(y_w) − m(y_l), low, high)), m the mean log-prob."""
    chosen, rejected = policy.per_token("clamped_simpo")
    losses = -F.logsigmoid((chosen - rejected).clamp(low, high))
    return LossOutput(losses, chosen.detach(), rejected.detach())


def check_clamp(*, low: float, high: float) -> None:
    if not low < high:
        raise ValueError(f"clamped_simpo: low must be below high, got {low} and {high}")


@pytest.fixture
def user_losses():
    """Registers the three losses above and restores LOSSES afterwards (it is process-wide)."""
    saved = dict(LOSSES)
    register("scaled_dpo", scaled_dpo_loss, needs_reference=True, logps="sum", paper="test")
    register("squared_hinge", squared_hinge_loss, needs_reference=True, logps="sum")
    register(
        "clamped_simpo", clamped_simpo_loss, needs_reference=False, logps="mean", check=check_clamp
    )
    yield
    LOSSES.clear()
    LOSSES.update(saved)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


def test_a_registered_loss_trains_by_name_from_a_config(tmp_path, model_dir, user_losses):
    """At step 1 policy == reference (a frozen copy), so h = 0 and L = −3·log σ(0) = 3·ln 2."""
    config = tiny_config(
        tmp_path,
        model_dir,
        loss={"name": "scaled_dpo", "params": {"beta": 0.1, "scale": 3}},
        train={"max_steps": 2},
        data={"eval": []},
    )
    assert config.loss.params == {"beta": 0.1, "scale": 3.0, "reduce": "sum"}
    assert type(config.loss.params["scale"]) is float  # the int 3 was declared a float
    result = train(config)
    assert result.outcome == "completed" and result.steps == 2
    losses = logged_losses(result.run_dir)
    assert len(losses) == 2 and losses[0] == pytest.approx(3 * math.log(2), abs=1e-6)
    assert read_manifest(result.run_dir)["loss"] == {
        "name": "scaled_dpo",
        "params": {"beta": 0.1, "scale": 3.0, "reduce": "sum"},
    }


def test_a_registered_loss_computes_its_formula_through_make_loss(user_losses):
    """policy (−5, −7), reference (−6, −6): h = 2. scaled: −2·log σ(0.5·2) = 2·0.3132617.
    squared hinge β = 0.25, p = 2: (1 − 0.5)² = 0.25; p = 1: 0.5.
    clamped: means −2.5 and −3.5 → clamp(1, −0.5, 0.5) = 0.5 → −log σ(0.5) = 0.4740770."""
    policy, reference = pair([-5.0], [-7.0], [2], [2]), pair([-6.0], [-6.0], [2], [2])
    scaled = make_loss("scaled_dpo", beta=0.5, scale=2)
    assert scaled(policy, reference).losses.item() == pytest.approx(2 * 0.3132616875)
    assert scaled.needs_reference and scaled.spec.paper == "test"
    assert make_loss("squared_hinge", beta=0.25)(policy, reference).losses.item() == 0.25
    assert make_loss("squared_hinge", beta=0.25, power=1)(policy, reference).losses.item() == 0.5
    clamped = make_loss("clamped_simpo", low=-0.5, high=0.5)
    assert not clamped.needs_reference and clamped.logps == "mean"
    assert clamped(policy).losses.item() == pytest.approx(0.4740769841)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("scaled_dpo", {"scale": 0}, r"scaled_dpo: scale must be a finite number in \(0.0, 10.0\]"),
        ("scaled_dpo", {"scale": 10.5}, r"scale .* got 10.5"),
        ("scaled_dpo", {"scale": "2"}, r"scale .* got '2'"),
        ("scaled_dpo", {"reduce": "max"}, r"reduce must be one of 'sum', 'mean', got 'max'"),
        ("scaled_dpo", {"beta": True}, r"beta must be a finite number in \(0.0, inf\), got True"),
        ("squared_hinge", {"power": 2.0}, r"power must be an integer in \[1, 3\], got 2.0"),
        ("squared_hinge", {"power": 4}, r"power .* got 4"),
        ("squared_hinge", {"power": True}, r"power .* got True"),
        ("clamped_simpo", {"low": math.inf}, r"low must be a finite number, got inf"),
        ("clamped_simpo", {"low": 1.0, "high": 0.0}, r"low must be below high, got 1.0 and 0.0"),
        ("clamped_simpo", {"beta": 1.0}, r"unknown hyper-parameter\(s\) beta; .* takes high, low"),
    ],
)
def test_make_loss_checks_a_registered_loss(user_losses, name, params, message):
    with pytest.raises(ValueError, match=message):
        make_loss(name, **params)


def test_a_config_checks_a_registered_loss(user_losses):
    with pytest.raises(ConfigError, match=r"loss.params: scaled_dpo: scale .* got 20"):
        config_from_dict({"loss": {"name": "scaled_dpo", "params": {"scale": 20}}})
    config = config_from_dict({"loss": {"name": "squared_hinge", "params": {"power": 3}}})
    assert config.loss.params == {"beta": 0.1, "power": 3}


def test_a_config_naming_an_unregistered_loss_is_refused():
    with pytest.raises(ConfigError, match="loss.name: unknown loss 'scaled_dpo'"):
        config_from_dict({"loss": {"name": "scaled_dpo"}})


def test_names_are_refused_when_built_in_or_taken(user_losses):
    with pytest.raises(ValueError, match="register 'dpo': a built-in loss has that name"):
        register("dpo", scaled_dpo_loss, needs_reference=True, logps="sum", replace=True)
    with pytest.raises(ValueError, match="'scaled_dpo': already registered; pass replace=True"):
        register("scaled_dpo", squared_hinge_loss, needs_reference=True, logps="sum")
    assert LOSSES["scaled_dpo"].fn is scaled_dpo_loss
    register("scaled_dpo", squared_hinge_loss, needs_reference=True, logps="sum", replace=True)
    assert set(make_loss("scaled_dpo").params) == {"beta", "power"}
    for bad in ("", "my loss", None):
        with pytest.raises(ValueError, match="a loss name is letters, digits"):
            register(bad, scaled_dpo_loss, needs_reference=True, logps="sum")


def _unannotated(policy, reference, *, beta=0.1):
    return scaled_dpo_loss(policy, reference, beta=beta)


def _optional(policy, reference, *, beta: float | None = None):
    return scaled_dpo_loss(policy, reference)


def _no_default(policy, reference, *, beta: Positive):
    return scaled_dpo_loss(policy, reference, beta=beta)


def _positional(policy, reference, beta: Positive = 0.1):
    return scaled_dpo_loss(policy, reference, beta=beta)


def _var_keyword(policy, reference, **params):
    return scaled_dpo_loss(policy, reference, **params)


def _bad_default(policy, reference, *, scale: Scale = 20.0):
    return scaled_dpo_loss(policy, reference, scale=scale)


def _bounded_bool(policy, reference, *, flag: Annotated[bool, Range(0)] = False):
    return scaled_dpo_loss(policy, reference)


@pytest.mark.parametrize(
    ("fn", "needs_reference", "message"),
    [
        (_unannotated, True, r"hyper-parameter 'beta' has no annotation; annotate it float, int"),
        (_optional, True, r"'beta' is annotated float \| None.*cannot be checked"),
        (_no_default, True, r"hyper-parameter 'beta' has no default"),
        (_positional, True, r"must look like \(policy, reference, \*, ...\)"),
        (_var_keyword, True, r"must look like \(policy, reference, \*, ...\)"),
        (scaled_dpo_loss, False, r"must look like \(policy, \*, ...\)"),
        (
            _bad_default,
            True,
            r"the default scale=20.0 does not fit: scale must be .* \(0.0, 10.0\]",
        ),
        (_bounded_bool, True, r"'flag' is annotated bool with a Range, which cannot be checked"),
        ("scaled_dpo_loss", True, r"fn must be a function"),
    ],
)
def test_bad_registrations_are_refused_and_change_nothing(fn, needs_reference, message):
    before = dict(LOSSES)
    with pytest.raises(TypeError, match=message):
        register("mine", fn, needs_reference=needs_reference, logps="sum")
    assert LOSSES == before


def test_unresolvable_annotations_and_bad_flags_are_refused():
    class Local:  # a local class: its string annotation cannot be resolved from the module
        pass

    def local_loss(policy: PairLogps, *, beta: Local = None):  # type: ignore[assignment]
        return policy

    with pytest.raises(TypeError, match=r"'mine': .*local_loss: cannot resolve its annotations"):
        register("mine", local_loss, needs_reference=False, logps="sum")
    with pytest.raises(ValueError, match="logps must be 'sum' or 'mean', got 'token'"):
        register("mine", scaled_dpo_loss, needs_reference=True, logps="token")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs_reference must be True or False, got 1"):
        register("mine", scaled_dpo_loss, needs_reference=1, logps="sum")  # type: ignore[arg-type]
    assert "mine" not in LOSSES


def test_an_unpaired_loss_may_take_data_inputs_but_does_not_train(user_losses):
    """KTO's `desirable` and `kl_reference` have no defaults: data inputs, allowed when unpaired."""
    with pytest.raises(TypeError, match="hyper-parameter 'desirable' has no default"):
        register("my_kto", kto_loss, needs_reference=True, logps="sum")
    register("my_kto", kto_loss, needs_reference=True, logps="sum", paired=False)
    assert set(make_loss("my_kto").params) == {"beta", "desirable_weight", "undesirable_weight"}
    with pytest.raises(ConfigError, match="'my_kto' takes unpaired examples"):
        config_from_dict({"loss": {"name": "my_kto"}})


def test_a_registered_loss_mixes_with_built_ins(user_losses):
    from prefalign.losses import mix_losses

    policy, reference = random_pairs(3, seed=60)
    mix = mix_losses([(1.0, make_loss("dpo")), (0.5, make_loss("scaled_dpo", scale=2.0))])
    dpo = make_loss("dpo")(policy, reference).losses
    torch.testing.assert_close(mix(policy, reference).losses, dpo + 0.5 * 2.0 * dpo)
