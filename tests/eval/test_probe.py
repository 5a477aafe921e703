"""`probe` and `prefalign probe`: reference and policy log-probs of responses equal a direct
computation with the base and the final/ model; per-token log-probs add up; errors exit 2."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from prefalign.cli.main import main
from prefalign.data.tokenize import IGNORE_INDEX, TruncationOptions, tokenize_pairs
from prefalign.data.types import Message, PreferencePair, Provenance
from prefalign.engine.forward.logps import sequence_logps
from prefalign.eval.probe import format_probe, probe
from prefalign.trainers.dpo.train import train
from run_helpers import tiny_config
from tiny_models import tiny_model_dir

PROMPT = "Tell me about the sea, please."
SYSTEM = "You are polite."
RESPONSES = ["Thank you for asking. Here is the sea.", "No, I will not. Not the sea."]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_tokenizer):
    """A finished 3-step full fine-tune with a high lr, so the policy differs from the base."""
    tmp_path = tmp_path_factory.mktemp("probe")
    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer)
    config = tiny_config(tmp_path, model_dir, optim={"lr": 5e-2},
                         train={"max_steps": 3, "eval_every": 0})
    result = train(config)
    assert result.outcome == "completed"
    return result.run_dir, model_dir


def _direct_logps(model_dir, tokenizer, system: str | None) -> list[float]:
    """Summed response log-probs by the training path: tokenize_pairs, then sequence_logps."""
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    prompt = ((Message("system", system),) if system else ()) + (Message("user", PROMPT),)
    pairs = [PreferencePair(prompt, r, r, Provenance("t", i)) for i, r in enumerate(RESPONSES)]
    logps = []
    for pair in tokenize_pairs(pairs, tokenizer, TruncationOptions(128)).pairs:
        ids = torch.tensor([pair.input_ids("chosen")])
        labels = torch.tensor([pair.labels("chosen")])
        assert (labels != IGNORE_INDEX).sum() == len(pair.chosen_ids)
        with torch.no_grad():
            logps.append(float(sequence_logps(model(input_ids=ids).logits, labels).sum[0]))
    return logps


@pytest.mark.parametrize("system", [None, SYSTEM])
def test_reference_and_policy_match_direct_computation(trained, tiny_tokenizer, system):
    run_dir, model_dir = trained
    result = probe(run_dir, PROMPT, RESPONSES, system=system)
    reference = _direct_logps(model_dir, tiny_tokenizer, system)
    policy = _direct_logps(run_dir / "final", tiny_tokenizer, system)
    assert [r.reference_logp for r in result.responses] == pytest.approx(reference, abs=1e-4)
    assert [r.policy_logp for r in result.responses] == pytest.approx(policy, abs=1e-4)
    assert reference != pytest.approx(policy, abs=1e-3)  # training moved the policy
    for item in result.responses:
        assert item.num_tokens > 0 and not item.truncated and item.tokens == ()
        assert item.change == pytest.approx(item.policy_logp - item.reference_logp)
        assert item.policy_prob == pytest.approx(torch.tensor(item.policy_logp).exp().item())


def test_per_token_logps_add_up_to_the_sequence_logp(trained):
    result = probe(trained[0], PROMPT, RESPONSES, per_token=True)
    for item in result.responses:
        assert len(item.tokens) == item.num_tokens
        assert sum(t.reference for t in item.tokens) == pytest.approx(item.reference_logp,
                                                                      abs=1e-4)
        assert sum(t.policy for t in item.tokens) == pytest.approx(item.policy_logp, abs=1e-4)
        assert all(t.reference <= 0 and t.policy <= 0 for t in item.tokens)
    assert "per token" in format_probe(result)


def test_cli_prints_reference_and_policy_columns(trained, capsys):
    argv = ["probe", str(trained[0]), "--prompt", PROMPT, "--system", SYSTEM, "--tokens"]
    for response in RESPONSES:
        argv += ["--response", response]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for text in ("ref logp", "policy logp", "change", "ref prob", "policy prob",
                 "response 2, per token:", "diff", "Thank you for asking", f"system: {SYSTEM}"):
        assert text in out


def test_missing_run_dir_or_final_exits_2(tmp_path, trained, capsys):
    assert main(["probe", str(tmp_path / "nope"), "--prompt", "hi", "--response", "yo"]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "manifest.json").write_text((trained[0] / "manifest.json").read_text())
    assert main(["probe", str(unfinished), "--prompt", "hi", "--response", "yo"]) == 2
    assert "no final/" in capsys.readouterr().err
