"""`model.gradient_checkpointing`: each decoder block is recomputed in backward (whole, or only its
elementwise operations: `pointwise`), and the result is the plain one — for the packed scorer
(per-pair block attention on and off), the padded one, the oneDNN route of float32 products and
bfloat16 autocast, with and without LoRA.

Recomputation replays the same operations on the same inputs, so log-probs and gradients match
the run without checkpointing to float32 rounding (1e-6; in practice equal).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from prefalign.data.collate import collate_pairs
from prefalign.engine.forward import onednn
from prefalign.engine.forward.packed import PackedPairScorer
from prefalign.engine.forward.recompute import PRODUCTS, recompute_blocks
from prefalign.engine.forward.scorer import PairScorer, decoder_blocks
from prefalign.engine.logger import read_metrics
from prefalign.trainers.dpo.train import train
from random_pairs import SHAPES, logps_and_grads, random_pairs
from run_helpers import tiny_config
from tiny_models import tiny_llama, tiny_model_dir

MATMULS = ["torch", *(["onednn"] if onednn.available() else [])]
MODES = ["blocks", "pointwise"]


def _model(tokenizer, lora: bool, recompute: str | None) -> torch.nn.Module:
    model = tiny_llama(tokenizer)
    if recompute:
        recompute_blocks(model, recompute)
    if lora:
        torch.manual_seed(1)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                 target_modules=["q_proj", "v_proj"]))
    return model.train()


def _block_calls(model: torch.nn.Module) -> list[int]:
    """A counter per block of its MLP's calls (the recomputation calls it again; counted on
    entry, since torch stops a recomputation once it has every tensor backward needs)."""
    calls = [0] * len(decoder_blocks(model))
    for i, block in enumerate(decoder_blocks(model)):
        block.mlp.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("matmul", MATMULS)
@pytest.mark.parametrize("scorer", ["blocks", "whole-row", "padded"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_recomputed_blocks_give_the_plain_logps_and_gradients(tiny_tokenizer, mode, matmul,
                                                               scorer, lora):
    batch = collate_pairs(random_pairs(len(tiny_tokenizer), SHAPES), tiny_tokenizer.pad_token_id)
    batch = {k: v for k, v in batch.items() if k != "index"}
    results = []
    for recompute in (None, mode):
        model = _model(tiny_tokenizer, lora, recompute)
        wrap = (PairScorer(model) if scorer == "padded" else
                PackedPairScorer(model, attention_blocks=scorer == "blocks"))
        calls = _block_calls(model)
        with onednn.cpu_matmul(matmul):
            results.append(logps_and_grads(wrap, batch))
        assert calls == [2 if recompute else 1] * len(calls)  # forward, then recomputed
    (plain, plain_grads), (again, again_grads) = results
    torch.testing.assert_close(again.chosen, plain.chosen, atol=1e-6, rtol=0)
    torch.testing.assert_close(again.rejected, plain.rejected, atol=1e-6, rtol=0)
    assert plain_grads.keys() == again_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(again_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("mode", MODES)
def test_recomputation_under_bfloat16_autocast_replays_it(tiny_tokenizer, mode):
    batch = collate_pairs(random_pairs(len(tiny_tokenizer), SHAPES), tiny_tokenizer.pad_token_id)
    batch = {k: v for k, v in batch.items() if k != "index"}
    results = []
    for recompute in (None, mode):
        scorer = PackedPairScorer(_model(tiny_tokenizer, False, recompute))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the forward only, as train.step
            logps = scorer(**batch)
        (logps.chosen.sum() - 2 * logps.rejected.sum()).backward()
        grads = {name: p.grad.clone() for name, p in scorer.named_parameters()
                 if p.grad is not None}
        results.append((logps, grads))
    (plain, plain_grads), (again, again_grads) = results
    torch.testing.assert_close(again.chosen, plain.chosen, atol=1e-6, rtol=0)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(again_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("mode", MODES)
def test_no_recomputation_without_gradients_or_in_eval_mode(tiny_tokenizer, mode):
    model = _model(tiny_tokenizer, False, mode)
    calls = _block_calls(model)
    batch = collate_pairs(random_pairs(len(tiny_tokenizer), SHAPES), tiny_tokenizer.pad_token_id)
    batch = {k: v for k, v in batch.items() if k != "index"}
    for context, mode in ((torch.no_grad(), "train"), (contextlib.nullcontext(), "eval")):
        getattr(model, mode)()
        with context:
            logps = PackedPairScorer(model)(**batch)
        if logps.chosen.requires_grad:  # eval mode: backward, but nothing was checkpointed
            logps.chosen.sum().backward()
    assert calls == [2] * len(calls)  # one forward each, no recomputation


def test_a_run_with_gradient_checkpointing_equals_one_without(tmp_path, tiny_tokenizer):
    """Whole runs (packed scorer, block attention, the default float32 route, held-out
    evaluation): the same losses and final weights."""
    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer)
    results = [train(tiny_config(tmp_path, model_dir, run={"name": f"checkpointing-{on}"},
                                 model={"gradient_checkpointing": on},
                                 train={"max_steps": 3, "eval_every": 3, "threads": 1}))
               for on in (False, True, "pointwise")]
    plain, *others = (read_metrics(result.run_dir) for result in results)
    for again in others:
        assert ([line["loss"] for line in again]
                == pytest.approx([line["loss"] for line in plain], abs=1e-6))
    weights = [load_file(str(result.run_dir / "final" / "model.safetensors"))
               for result in results]
    for other in weights[1:]:
        assert max((weights[0][k] - other[k]).abs().max().item() for k in weights[0]) < 1e-6


class _CountOps(TorchDispatchMode):
    """Counts the operators that run while it is active: all of them, and the matrix products
    and attention kernels that `pointwise` keeps (recompute.PRODUCTS)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = self.products = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.total += 1
        self.products += func in PRODUCTS
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("matmul", MATMULS)
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_pointwise_recomputes_elementwise_operations_and_no_product(tiny_tokenizer, matmul,
                                                                     lora):
    """What backward runs: with `pointwise` the plain backward's products and nothing more (every
    product's output was kept) plus the elementwise operations again; with `blocks` the
    products again too. Operator counts are deterministic, unlike allocation counters."""
    batch = collate_pairs(random_pairs(len(tiny_tokenizer), SHAPES), tiny_tokenizer.pad_token_id)
    batch = {k: v for k, v in batch.items() if k != "index"}
    counts = {}
    for recompute in (None, "pointwise", "blocks"):
        scorer = PackedPairScorer(_model(tiny_tokenizer, lora, recompute))
        with onednn.cpu_matmul(matmul):
            logps = scorer(**batch)
        with _CountOps() as backward:
            (logps.chosen.sum() + logps.rejected.sum()).backward()
        counts[recompute] = backward
    plain, pointwise, blocks = counts[None], counts["pointwise"], counts["blocks"]
    assert pointwise.products == plain.products < blocks.products
    assert plain.total < pointwise.total < blocks.total


def test_an_unknown_recompute_mode_is_refused(tiny_tokenizer):
    with pytest.raises(ValueError, match="'blocks' or 'pointwise', got 'layers'"):
        recompute_blocks(tiny_llama(tiny_tokenizer), "layers")
