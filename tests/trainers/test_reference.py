"""Reference strategies agree where they must: adapter_off, frozen_copy and precomputed at step 0."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from prefalign.config import Config
from prefalign.data.collate import collate_pairs
from prefalign.engine.forward.gather import eval_mode
from prefalign.engine.forward.scorer import PairScorer
from prefalign.engine.forward.select import build_scorer
from prefalign.engine.models.load import LoadedModel, load_model
from prefalign.losses import PairLogps
from prefalign.trainers.dpo import reference as reference_module
from prefalign.trainers.dpo.data import TokenizedSplit, prepare_splits
from prefalign.trainers.dpo.reference import Reference, build_reference
from run_helpers import tiny_config
from tiny_models import tiny_model_dir

LORA = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.3}
BATCHES = {"train": [[0, 1, 2, 3], [17, 5, 23, 8]], "eval": [[0, 1, 2], [11, 4]]}



def _setup(tmp_path: Path, tokenizer, initializer_range: float = 0.02,
           **sections) -> tuple[Config, LoadedModel, dict]:
    """A tiny model with attention dropout (so eval mode matters), its config, policy and splits."""
    model_dir = tiny_model_dir(tmp_path, tokenizer, attention_dropout=0.2,
                               initializer_range=initializer_range)
    config = tiny_config(tmp_path, model_dir, **sections)
    loaded = load_model(config.model, config.lora)
    loaded.model.train()  # as during training: dropout active in the policy
    return config, loaded, prepare_splits(config, loaded.tokenizer)


def _with_strategy(config: Config, strategy: str) -> Config:
    from dataclasses import replace

    return replace(config, reference=replace(config.reference, strategy=strategy))


def _batch(split: TokenizedSplit, indices: list[int], pad_token_id: int) -> dict:
    batch = collate_pairs([split.tokenized[i] for i in indices], pad_token_id)
    batch["index"] = torch.tensor(indices, dtype=torch.long)  # (B,)
    return batch


def _all_logps(reference: Reference, splits: dict, pad_token_id: int) -> list[PairLogps]:
    return [reference.logps(_batch(splits[name], indices, pad_token_id), name)
            for name, batches in BATCHES.items() for indices in batches]


def _assert_close(left: list[PairLogps], right: list[PairLogps], rtol: float = 1e-6) -> None:
    """Equal to float32 rounding: sums near -300 have an ulp of 3e-5, and the two sides may pack
    the same pairs into different rows (other summation order), so compare relatively."""
    for a, b in zip(left, right, strict=True):
        torch.testing.assert_close(a.chosen, b.chosen, rtol=rtol, atol=1e-6)
        torch.testing.assert_close(a.rejected, b.rejected, rtol=rtol, atol=1e-6)
        assert torch.equal(a.chosen_count, b.chosen_count)
        assert torch.equal(a.rejected_count, b.rejected_count)


def test_adapter_off_equals_frozen_copy_at_step_0(tmp_path, tiny_tokenizer):
    config, loaded, splits = _setup(tmp_path, tiny_tokenizer, lora=LORA)
    scorer = PairScorer(loaded.model)
    pad = loaded.tokenizer.pad_token_id
    adapter_off = build_reference(_with_strategy(config, "adapter_off"), loaded, scorer, splits)
    frozen = build_reference(_with_strategy(config, "frozen_copy"), loaded, scorer, splits)
    off_logps = _all_logps(adapter_off, splits, pad)
    _assert_close(off_logps, _all_logps(frozen, splits, pad))
    _assert_close(off_logps, _all_logps(adapter_off, splits, pad))  # no dropout: repeatable
    assert all(not lp.chosen.requires_grad and not lp.rejected.requires_grad for lp in off_logps)
    assert all(module.training for module in loaded.model.modules())  # train mode restored
    assert adapter_off.describe() == {"strategy": "adapter_off", "autocast": "off", "note": None}


def test_frozen_copy_is_a_separate_frozen_model(tmp_path, tiny_tokenizer):
    config, loaded, splits = _setup(tmp_path, tiny_tokenizer)
    reference = build_reference(config, loaded, PairScorer(loaded.model), splits)
    frozen = reference.scorer.model
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    pad = loaded.tokenizer.pad_token_id
    before = _all_logps(reference, splits, pad)
    policy_scorer = PairScorer(loaded.model)
    with eval_mode(policy_scorer), torch.no_grad():
        policy = [policy_scorer(**{k: v for k, v in _batch(splits[n], i, pad).items()
                                   if k != "index"})
                  for n, batches in BATCHES.items() for i in batches]
    _assert_close(before, policy)  # the reference is the policy as loaded
    with torch.no_grad():
        for parameter in loaded.model.parameters():
            parameter.add_(0.01)
    _assert_close(before, _all_logps(reference, splits, pad))  # training the policy leaves it be
    assert reference.describe()["weight_hash"] == loaded.weight_hash


def test_precomputed_equals_frozen_copy_on_the_fly(tmp_path, tiny_tokenizer):
    config, loaded, splits = _setup(tmp_path, tiny_tokenizer, lora=LORA,
                                    train={"eval_batch_size": 3})
    scorer = PairScorer(loaded.model)
    pad = loaded.tokenizer.pad_token_id
    precomputed = build_reference(_with_strategy(config, "precomputed"), loaded, scorer, splits)
    frozen = build_reference(_with_strategy(config, "frozen_copy"), loaded, scorer, splits)
    _assert_close(_all_logps(precomputed, splits, pad), _all_logps(frozen, splits, pad))
    every = list(range(len(splits["train"].tokenized)))
    whole = precomputed.logps(_batch(splits["train"], every, pad), "train")
    assert whole.chosen.shape == (24,) and bool((whole.chosen < 0).all())


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_precomputed_scores_the_policy_itself(tmp_path, tiny_tokenizer, monkeypatch, lora):
    """No starting adapter: the pass runs on the policy (LoRA: adapter off), reads no second
    copy, and leaves the policy as it was: in train mode, adapter on, no gradients."""
    config, loaded, splits = _setup(tmp_path, tiny_tokenizer, lora=LORA if lora else {},
                                    train={"eval_batch_size": 3})
    pad = loaded.tokenizer.pad_token_id
    frozen = build_reference(_with_strategy(config, "frozen_copy"), loaded,
                             PairScorer(loaded.model), splits)

    def no_second_copy(*args, **kwargs):
        raise AssertionError("precomputed loaded a second copy of the weights")

    monkeypatch.setattr(reference_module, "load_reference_model", no_second_copy)
    precomputed = build_reference(_with_strategy(config, "precomputed"), loaded,
                                  PairScorer(loaded.model), splits)
    _assert_close(_all_logps(precomputed, splits, pad), _all_logps(frozen, splits, pad))
    assert all(module.training for module in loaded.model.modules())
    assert all(p.grad is None for p in loaded.model.parameters())
    layers = [m for m in loaded.model.modules() if hasattr(m, "lora_A")]
    assert len(layers) == (4 if lora else 0)  # q_proj, v_proj of 2 layers
    assert not any(layer.disable_adapters for layer in layers)  # the adapter is back on


def test_precomputed_with_a_starting_adapter_uses_the_merged_copy(tmp_path, tiny_tokenizer,
                                                                  monkeypatch):
    """With `model.adapter` the pass scores base + adapter merged, as frozen_copy does."""
    config, first, splits = _setup(tmp_path, tiny_tokenizer, lora=LORA,
                                   train={"eval_batch_size": 3})
    adapter = _save_trained_adapter(tmp_path, first)
    config = tiny_config(tmp_path, config.model.source, lora=LORA, train={"eval_batch_size": 3},
                         model={"adapter": str(adapter)})
    loaded = load_model(config.model, config.lora)
    loaded.model.train()
    pad = loaded.tokenizer.pad_token_id
    scorer = PairScorer(loaded.model)
    frozen = build_reference(_with_strategy(config, "frozen_copy"), loaded, scorer, splits)
    loads = []
    original = reference_module.load_reference_model
    monkeypatch.setattr(reference_module, "load_reference_model",
                        lambda *a, **k: loads.append(1) or original(*a, **k))
    precomputed = build_reference(_with_strategy(config, "precomputed"), loaded, scorer, splits)
    assert loads == [1]
    _assert_close(_all_logps(precomputed, splits, pad), _all_logps(frozen, splits, pad))


def test_strategy_none_gives_no_reference(tmp_path, tiny_tokenizer):
    config, loaded, splits = _setup(
        tmp_path, tiny_tokenizer, loss={"name": "simpo", "params": {}},
        reference={"strategy": "none"},
    )
    reference = build_reference(config, loaded, PairScorer(loaded.model), splits)
    batch = _batch(splits["train"], [0, 1], loaded.tokenizer.pad_token_id)
    assert reference.logps(batch, "train") is None
    assert reference.describe() == {"strategy": "none"}


def _save_trained_adapter(tmp_path: Path, loaded: LoadedModel) -> Path:
    """The policy's LoRA with non-zero B, as after some training, saved as an adapter."""
    torch.manual_seed(2)
    with torch.no_grad():
        for name, parameter in loaded.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    directory = tmp_path / "adapter"
    loaded.model.save_pretrained(str(directory))
    return directory


def test_starting_adapter_semantics(tmp_path, tiny_tokenizer, caplog):
    """frozen_copy = base + starting adapter (= the policy at step 0); adapter_off = base alone."""
    config, first, splits = _setup(tmp_path, tiny_tokenizer, lora=LORA)
    pad = first.tokenizer.pad_token_id
    base = _all_logps(build_reference(config, first, PairScorer(first.model), splits), splits, pad)
    adapter = _save_trained_adapter(tmp_path, first)
    config = tiny_config(tmp_path, config.model.source, lora=LORA,
                         model={"adapter": str(adapter)})
    loaded = load_model(config.model, config.lora)
    scorer = PairScorer(loaded.model)
    frozen = build_reference(config, loaded, scorer, splits)
    with eval_mode(scorer), torch.no_grad():
        policy = [scorer(**{k: v for k, v in _batch(splits[n], i, pad).items() if k != "index"})
                  for n, batches in BATCHES.items() for i in batches]
    # merged W + s·BA against W x + s·B(A x): equal up to float32 rounding of sums near -200
    _assert_close(_all_logps(frozen, splits, pad), policy, rtol=1e-6)
    assert frozen.describe()["adapter_merged"] == str(adapter)
    with caplog.at_level(logging.WARNING, logger="prefalign.trainers.dpo.reference"):
        adapter_off = build_reference(_with_strategy(config, "adapter_off"), loaded, scorer, splits)
    assert "WITHOUT the starting adapter" in caplog.text
    assert "WITHOUT" in adapter_off.describe()["note"]
    _assert_close(_all_logps(adapter_off, splits, pad), base)
    assert not torch.allclose(policy[0].chosen, base[0].chosen)  # the adapter matters


@pytest.mark.parametrize("strategy", ["frozen_copy", "adapter_off", "precomputed"])
def test_policy_precision_scores_as_the_policy_under_autocast(tmp_path, tiny_tokenizer, strategy):
    """`reference.precision: policy` under bfloat16 autocast: at step 0 the reference is the
    policy's own autocast forward, not the float32 one that `full` (the default) gives.

    Tolerance: weights drawn 10x wider than usual (sums near -400) so that bfloat16 moves the
    float32 sums by 1e-4 relative and more, while two autocast forwards of the same scorer that
    pack the pairs into other rows agree within 1e-6 (the padded scorer would differ from the
    packed one by bfloat16 roundings, hence the policy is scored as training scores it)."""
    from dataclasses import replace

    config, loaded, splits = _setup(tmp_path, tiny_tokenizer, initializer_range=0.2, lora=LORA,
                                    train={"autocast": "bfloat16", "eval_batch_size": 3},
                                    reference={"precision": "policy"})
    config = _with_strategy(config, strategy)
    pad = loaded.tokenizer.pad_token_id
    scorer = build_scorer(loaded.model, config.train)  # packed, as training runs it
    with eval_mode(scorer), torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        policy = [scorer(**{k: v for k, v in _batch(splits[n], i, pad).items() if k != "index"})
                  for n, batches in BATCHES.items() for i in batches]
    mixed = build_reference(config, loaded, scorer, splits)
    full_config = replace(config, reference=replace(config.reference, precision="full"))
    full = build_reference(full_config, loaded, scorer, splits)
    mixed_logps, full_logps = _all_logps(mixed, splits, pad), _all_logps(full, splits, pad)
    _assert_close(mixed_logps, policy)
    for ours, float32 in zip(mixed_logps, full_logps, strict=True):  # bfloat16 really ran
        assert not torch.allclose(ours.chosen, float32.chosen, rtol=2e-5, atol=0.0)
        assert not torch.allclose(ours.rejected, float32.rejected, rtol=2e-5, atol=0.0)
    assert mixed.describe()["autocast"] == "bfloat16"
    assert full.describe()["autocast"] == "off"
