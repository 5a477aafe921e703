"""What the scorers refuse by name, and the soft-capped attention they route to eager."""

from __future__ import annotations

import pytest
import torch
import transformers
from test_architectures import ARCHITECTURES, LOGPS_TOLERANCE, _batch, own_forward_logps

from prefalign.engine.forward.model_features import UnsupportedModelError, untested_warning
from prefalign.engine.forward.packed import PackedPairScorer
from prefalign.engine.forward.scorer import PairScorer
from tiny import build_tiny_tokenizer

# Phi-3's long-context rotary embeddings (as in Phi-3-mini-128k), switching at 16 tokens: the
# long batch's longest sequence has 22, the short batch's 6
LONGROPE = dict(
    rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                     "short_factor": [1.0] * 4, "long_factor": [4.0] * 4},
    original_max_position_embeddings=16,
)


@pytest.mark.parametrize("scorer", [PairScorer, PackedPairScorer])
def test_batch_dependent_rope_is_refused_past_its_threshold(scorer):
    """longrope picks its frequencies by the longest sequence of the forward, so a batch past
    the threshold would score its shorter sequences with the long factors (1.5e-3 nats off
    here); within it both scorers are the model's own."""
    model = ARCHITECTURES["phi3"].build(**LONGROPE)
    with torch.no_grad():
        short = scorer(model)(**_batch("short"))
        expected = own_forward_logps(model, _batch("short"))
        with pytest.raises(UnsupportedModelError,
                           match=r"Phi3ForCausalLM: rotary embeddings of rope_type 'longrope'.*"
                                 r"this batch's is 22.*data.max_length to at most 16"):
            scorer(model)(**_batch("long"))
    torch.testing.assert_close(torch.stack([short.chosen, short.rejected]), expected,
                               atol=LOGPS_TOLERANCE, rtol=0)


def test_bidirectional_attention_is_refused_by_the_packed_scorer():
    model = ARCHITECTURES["gemma3"].build(use_bidirectional_attention=True)
    with pytest.raises(UnsupportedModelError,
                       match=r"Gemma3ForCausalLM: bidirectional attention "
                             r"\(use_bidirectional_attention=True\).*train.scorer: padded"):
        PackedPairScorer(model)


def test_layers_that_are_not_attention_are_refused_by_the_packed_scorer():
    """LFM2's convolution layers carry state along the row, across packed pairs."""
    tokenizer = build_tiny_tokenizer()
    config = transformers.Lfm2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, layer_types=["conv", "full_attention"],
    )
    with pytest.raises(UnsupportedModelError,
                       match=r"Lfm2ForCausalLM: layers of type \['conv'\] \(layer_types\)"):
        PackedPairScorer(transformers.Lfm2ForCausalLM(config))


def test_a_window_the_layers_do_not_report_is_refused_past_it():
    """A sliding_window in the config that no attention layer reports (Llama's ignore it) could
    be applied by the model in ways the packed masks do not know: refused once a sequence is
    longer than the window, scored within it."""
    model = ARCHITECTURES["llama"].build(sliding_window=8)
    with torch.no_grad():
        PackedPairScorer(model)(**_batch("short"))
        with pytest.raises(UnsupportedModelError,
                           match=r"LlamaForCausalLM: sliding-window attention "
                                 r"\(sliding_window=8\) is not reported"):
            PackedPairScorer(model)(**_batch("long"))


def test_soft_capped_attention_runs_eager_under_sdpa():
    """Gemma 2 set to sdpa: transformers' sdpa refuses its attention soft-capping (the padded
    scorer, which runs the model's own attention, fails so); the packed scorer runs those
    layers through Gemma 2's eager function and scores as the model does under eager."""
    model = ARCHITECTURES["gemma2"].build()
    batch = _batch("long")
    with torch.no_grad():
        expected = own_forward_logps(model, batch)
        model.config._attn_implementation = "sdpa"
        with pytest.raises(ValueError, match="does not support `softcap`"):
            PairScorer(model)(**batch)
        logps = PackedPairScorer(model)(**batch)
    torch.testing.assert_close(torch.stack([logps.chosen, logps.rejected]), expected,
                               atol=LOGPS_TOLERANCE, rtol=0)


def test_untested_architectures_are_named():
    assert untested_warning(ARCHITECTURES["llama"].build()) is None
    tokenizer = build_tiny_tokenizer()
    config = transformers.Lfm2Config(vocab_size=len(tokenizer), hidden_size=32,
                                     intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2)
    warning = untested_warning(transformers.Lfm2ForCausalLM(config))
    assert warning is not None and warning.startswith("Lfm2ForCausalLM is not among")
