"""The prefix-shared, packed reward forward against transformers' own sequence-classification
forward: on each sequence alone, on the padded stack, with LoRA, gradients too (within 1e-5)."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from prefalign.data.collate import collate_pairs
from prefalign.data.tokenize import TokenizedPair
from prefalign.engine.forward.packed_layout import PairTokens, build_layout
from prefalign.engine.forward.reward import (
    RewardPairScorer,
    last_token,
    reward_positions,
    sequence_rewards,
)
from prefalign.engine.models.reward import reward_model_from
from random_pairs import SHAPES, random_pairs
from tiny_models import tiny_llama

TOLERANCE = 1e-5


def tiny_reward(tokenizer, *, pad_token_id=None, seed=0, **overrides):
    causal = tiny_llama(tokenizer, seed=seed, **overrides)
    pad = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
    return reward_model_from(causal, pad_token_id=pad, seed=seed + 1)


def ending_with(pairs: list[TokenizedPair], token: int) -> list[TokenizedPair]:
    """Every response closed by `token`, as the chat template closes each turn."""
    return [TokenizedPair(p.pair_id, p.prompt_ids, p.chosen_ids + (token,),
                          p.rejected_ids + (token,)) for p in pairs]


def alone(model, pairs: list[TokenizedPair]) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' forward on each chosen and rejected sequence by itself, no padding."""
    def score(ids):
        return model(input_ids=torch.tensor([ids])).logits[0, 0]

    with torch.no_grad():
        chosen = torch.stack([score(p.input_ids("chosen")) for p in pairs])
        rejected = torch.stack([score(p.input_ids("rejected")) for p in pairs])
    return chosen, rejected


def rewards_and_grads(scorer, batch):
    scorer.zero_grad()
    rewards = scorer(**batch)
    (rewards.chosen.sum() - 2 * rewards.rejected.sum()).backward()
    grads = {name: p.grad.clone() for name, p in scorer.named_parameters() if p.grad is not None}
    return rewards, grads


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("max_row_tokens", [None, 1, 30])
@pytest.mark.parametrize("blocks", [True, False], ids=["blocks", "whole-row"])
def test_packed_equals_each_sequence_alone(tiny_tokenizer, attention, max_row_tokens, blocks):
    model = tiny_reward(tiny_tokenizer, attn_implementation=attention)
    pairs = ending_with(random_pairs(len(tiny_tokenizer), SHAPES), tiny_tokenizer.eos_token_id)
    batch = collate_pairs(pairs, tiny_tokenizer.pad_token_id)
    scorer = RewardPairScorer(model, max_row_tokens=max_row_tokens, attention_blocks=blocks)
    with torch.no_grad():
        packed = scorer(**batch)
    chosen, rejected = alone(model, pairs)
    torch.testing.assert_close(packed.chosen, chosen, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(packed.rejected, rejected, atol=TOLERANCE, rtol=0)
    assert packed.chosen_count.tolist() == [len(p.chosen_ids) for p in pairs]
    assert packed.rejected_count.tolist() == [len(p.rejected_ids) for p in pairs]


def test_pad_token_that_ends_every_reply(tiny_tokenizer):
    """SmolLM2's pad token is its end-of-turn token: transformers then reads the reward at the
    reply's last token before it, and so does the packed forward (also under padding)."""
    eot = tiny_tokenizer.eos_token_id
    model = tiny_reward(tiny_tokenizer, pad_token_id=eot)
    pairs = ending_with(random_pairs(len(tiny_tokenizer), SHAPES, seed=4), eot)
    batch = collate_pairs(pairs, eot)
    with torch.no_grad():
        packed = RewardPairScorer(model)(**batch)
        padded = RewardPairScorer(model, packed=False)(**batch)
    chosen, rejected = alone(model, pairs)
    for rewards in (packed, padded):
        torch.testing.assert_close(rewards.chosen, chosen, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(rewards.rejected, rejected, atol=TOLERANCE, rtol=0)
    ids = pairs[0].input_ids("chosen")
    assert ids[-1] == eot and last_token(ids, eot) == len(ids) - 2


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "padded"])
def test_gradients_equal_the_padded_transformers_forward(tiny_tokenizer, packed):
    model = tiny_reward(tiny_tokenizer)
    pairs = ending_with(random_pairs(len(tiny_tokenizer), SHAPES, seed=5),
                        tiny_tokenizer.eos_token_id)
    batch = collate_pairs(pairs, tiny_tokenizer.pad_token_id)
    reference, reference_grads = rewards_and_grads(RewardPairScorer(model, packed=False), batch)
    rewards, grads = rewards_and_grads(RewardPairScorer(model, packed=packed), batch)
    torch.testing.assert_close(rewards.chosen, reference.chosen, atol=TOLERANCE, rtol=0)
    assert "model.score.weight" in grads and grads.keys() == reference_grads.keys()
    for name, grad in reference_grads.items():  # float32 sums in another order: relative too
        torch.testing.assert_close(grads[name], grad, atol=TOLERANCE, rtol=TOLERANCE, msg=name)


def test_lora_reward_model(tiny_tokenizer):
    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                      init_lora_weights=False, task_type="SEQ_CLS")
    model = get_peft_model(tiny_reward(tiny_tokenizer), lora)
    pairs = ending_with(random_pairs(len(tiny_tokenizer), SHAPES, seed=6),
                        tiny_tokenizer.eos_token_id)
    batch = collate_pairs(pairs, tiny_tokenizer.pad_token_id)
    rewards, grads = rewards_and_grads(RewardPairScorer(model), batch)
    chosen, rejected = alone(model, pairs)
    torch.testing.assert_close(rewards.chosen, chosen, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(rewards.rejected, rejected, atol=TOLERANCE, rtol=0)
    trained = {name for name in grads if "lora_" in name or "modules_to_save" in name}
    assert trained == set(grads) and any("score" in name for name in grads)


def test_responses_sharing_first_tokens(tiny_tokenizer):
    """The shared prefix runs into the replies; a reply that is a prefix of the other is read
    inside the shared part."""
    pairs = random_pairs(len(tiny_tokenizer), [(4, 6, 5), (2, 3, 7)], seed=3)
    first = pairs[0]
    pairs[0] = TokenizedPair("same-start", first.prompt_ids, first.chosen_ids,
                             first.chosen_ids[:3] + (9, 10))
    pairs[1] = TokenizedPair("prefix", pairs[1].prompt_ids, pairs[1].chosen_ids,
                             pairs[1].chosen_ids + (11, 12))
    model = tiny_reward(tiny_tokenizer)
    with torch.no_grad():
        packed = RewardPairScorer(model)(**collate_pairs(pairs, tiny_tokenizer.pad_token_id))
    chosen, rejected = alone(model, pairs)
    torch.testing.assert_close(packed.chosen, chosen, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(packed.rejected, rejected, atol=TOLERANCE, rtol=0)


def test_reward_positions_by_hand():
    """Pair 0: prompt (1, 2), chosen (3, 4), rejected (5,): segment 1 2 3 4 5, the rejected 5 at
    flat 4. Pair 1 starts at flat 5: prompt (6,), chosen (7,), rejected (8, 9) → 6 7 8 9; its
    chosen 7 at 6, its rejected 9 at 8."""
    pairs = [PairTokens((1, 2, 3, 4), (-100, -100, 3, 4), (1, 2, 5), (-100, -100, 5)),
             PairTokens((6, 7), (-100, 7), (6, 8, 9), (-100, 8, 9))]
    layout = build_layout(pairs)
    assert reward_positions(pairs, layout, pad_token_id=0).tolist() == [3, 6, 4, 8]
    flat = layout.input_ids.flatten()
    assert flat[[3, 6, 4, 8]].tolist() == [4, 7, 5, 9]


def test_sequence_rewards_match_one_by_one(tiny_tokenizer):
    model = tiny_reward(tiny_tokenizer)
    pairs = random_pairs(len(tiny_tokenizer), SHAPES, seed=7)
    sequences = [p.input_ids("chosen") for p in pairs]
    chosen, _ = alone(model, pairs)
    torch.testing.assert_close(sequence_rewards(model, sequences, batch_size=3), chosen,
                               atol=TOLERANCE, rtol=0)
