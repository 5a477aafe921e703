"""`train.sparse_embedding_grad`: a tied input embedding's gradient as sparse rows summed into the
output projection's dense gradient, or (packed scorer) as rows added in place to it
(`train.tied_embedding`), equals the plain dense gradient. Tolerances: the same float32 terms
summed in another order (~1e-7 relative); lr 1e-4 keeps that below 1e-6 on the weights (as in
test_invariants.py).
"""

from __future__ import annotations

import pytest
import torch

import prefalign.trainers.dpo.train as loop
from prefalign.config import LoraSection
from prefalign.engine.forward.packed import score_tokenized_pairs
from prefalign.engine.forward.scorer import sparse_tied_embedding_grad
from prefalign.engine.forward.tied_embedding import tied_embedding
from prefalign.engine.manifest import read_manifest
from prefalign.engine.models.load import apply_lora
from random_pairs import random_pairs
from run_helpers import SMALL_LR, final_weights, logged_losses, max_weight_difference, tiny_config
from tiny_models import tiny_llama, tiny_model_dir

SHAPES = [(40, 20, 30), (10, 25, 5), (60, 8, 12)]


def _gradients(model, pairs, accumulate: int = 1, layouts: list | None = None):
    """Parameter gradients; `layouts` collects the layout of each gradient the embedding's own
    backward hands autograd for its weight (its hook makes the packed scorer call the module,
    not the in-place handoff: `tied_embedding`)."""
    def record(module, args, output):
        output.grad_fn.register_hook(lambda grad_inputs, _: layouts.append(grad_inputs[0].layout))

    hook = (model.get_input_embeddings().register_forward_hook(record)
            if layouts is not None else None)
    model.zero_grad(set_to_none=True)
    for _ in range(accumulate):
        logps = score_tokenized_pairs(model, pairs)
        (logps.chosen.sum() - 2 * logps.rejected.sum()).backward()
    if hook is not None:
        hook.remove()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("accumulate", [1, 2])
def test_sparse_rows_give_the_dense_gradient(tiny_tokenizer, accumulate):
    model = tiny_llama(tiny_tokenizer, seed=3).train()
    pairs = random_pairs(len(tiny_tokenizer), SHAPES, seed=4)
    dense_layouts, sparse_layouts = [], []
    dense = _gradients(model, pairs, accumulate, dense_layouts)
    assert sparse_tied_embedding_grad(model)
    sparse = _gradients(model, pairs, accumulate, sparse_layouts)
    assert dense_layouts == [torch.strided] * accumulate
    assert sparse_layouts == [torch.sparse_coo] * accumulate  # the embedding sent rows only
    assert sparse.keys() == dense.keys()
    for name, grad in sparse.items():
        assert grad.layout == torch.strided, name  # the optimiser never sees sparse rows
        torch.testing.assert_close(grad, dense[name], rtol=1e-5, atol=1e-6)


def _out_of_place_sums(model, pairs) -> int:
    """How many (V, H) tensors one backward adds out of place (`aten::add`, not `add_`)."""
    weight = model.get_output_embeddings().weight
    logps = score_tokenized_pairs(model, pairs)
    with torch.profiler.profile(record_shapes=True) as profile:
        (logps.chosen.sum() - 2 * logps.rejected.sum()).backward()
    model.zero_grad(set_to_none=True)
    return sum(1 for event in profile.events()
               if event.name == "aten::add" and event.input_shapes[:1] == [list(weight.shape)])


@pytest.mark.parametrize("accumulate", [1, 2])
def test_handed_off_rows_give_the_dense_gradient_without_a_copy(tiny_tokenizer, accumulate):
    model = tiny_llama(tiny_tokenizer, seed=3).train()
    pairs = random_pairs(len(tiny_tokenizer), SHAPES, seed=4)
    weight = model.get_output_embeddings().weight
    # a token of the pairs as padding_idx: nn.Embedding gives its row no gradient, nor may we
    model.get_input_embeddings().padding_idx = pairs[0].prompt_ids[0]
    dense = _gradients(model, pairs, accumulate)
    assert tied_embedding(model, weight) is None  # the switch is off: the module looks up
    assert _out_of_place_sums(model, pairs) == 0  # a dense embedding gradient is added in place
    assert sparse_tied_embedding_grad(model)
    assert tied_embedding(model, weight) is model.get_input_embeddings()
    handed_off = _gradients(model, pairs, accumulate)
    assert _out_of_place_sums(model, pairs) == 0
    assert handed_off.keys() == dense.keys()
    for name, grad in handed_off.items():
        assert grad.layout == torch.strided, name
        torch.testing.assert_close(grad, dense[name], rtol=1e-5, atol=1e-6)


def test_sparse_rows_are_summed_out_of_place(tiny_tokenizer):
    """Why the handoff exists: where the module itself looks up (a hook on it makes the packed
    scorer fall back), autograd adds its sparse rows to a copy of the dense gradient."""
    model = tiny_llama(tiny_tokenizer, seed=3).train()
    pairs = random_pairs(len(tiny_tokenizer), SHAPES, seed=4)
    assert sparse_tied_embedding_grad(model)
    hook = model.get_input_embeddings().register_forward_hook(lambda *args: None)
    assert tied_embedding(model, model.get_output_embeddings().weight) is None
    assert _out_of_place_sums(model, pairs) >= 1  # add() shows as two nested events
    hook.remove()


def test_no_handoff_without_grad_or_when_untied_or_frozen(tiny_tokenizer):
    model = tiny_llama(tiny_tokenizer, seed=3)
    assert sparse_tied_embedding_grad(model)
    with torch.no_grad():
        assert tied_embedding(model, model.get_output_embeddings().weight) is None
    untied = tiny_llama(tiny_tokenizer, seed=3, tie_word_embeddings=False)
    untied.get_input_embeddings().sparse = True
    assert tied_embedding(untied, untied.get_output_embeddings().weight) is None
    model.get_input_embeddings().weight.requires_grad_(False)
    assert tied_embedding(model, model.get_output_embeddings().weight) is None


def test_untied_or_frozen_embeddings_stay_dense(tiny_tokenizer):
    untied = tiny_llama(tiny_tokenizer, seed=3, tie_word_embeddings=False)
    assert not sparse_tied_embedding_grad(untied)
    assert not untied.get_input_embeddings().sparse
    lora = apply_lora(tiny_llama(tiny_tokenizer, seed=3), LoraSection(enabled=True, r=4, alpha=8))
    assert not sparse_tied_embedding_grad(lora)  # the embedding is frozen under LoRA
    assert not lora.get_input_embeddings().sparse


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


def test_a_sparse_embedding_run_equals_a_dense_run(tmp_path, model_dir):
    results = {}
    for sparse in (True, False):
        config = tiny_config(tmp_path, model_dir, run={"name": f"sparse-{sparse}"}, optim=SMALL_LR,
                             train={"max_steps": 3, "grad_accum": 2, "batch_size": 2,
                                    "sparse_embedding_grad": sparse})
        results[sparse] = loop.train(config)
    ours, plain = results[True].run_dir, results[False].run_dir
    assert read_manifest(ours)["config"]["train"]["sparse_embedding_grad"] is True
    assert logged_losses(ours) == pytest.approx(logged_losses(plain), rel=1e-5)
    assert len(logged_losses(ours)) == 3
    assert max_weight_difference(final_weights(ours), final_weights(plain)) < 1e-6
