"""`prefalign eval` end to end on a tiny trained run (a model directory, not the default alias):
every output file, numbers that agree with direct computations, and clear errors."""

from __future__ import annotations

import csv
import json

import pytest

from prefalign.cli.main import main
from prefalign.eval.generate import DecodeSettings
from prefalign.eval.probe import probe
from prefalign.eval.runner import EvalOptions, run_eval
from prefalign.trainers.dpo.train import train
from run_helpers import pair_rows, tiny_config
from tiny_models import tiny_model_dir

SMALL = EvalOptions(max_pairs=8, harmful=3, benign=3, kl_prompts=4, helpful_pairs=3,
                    decoding=DecodeSettings(max_new_tokens=6, batch_size=4), batch_size=4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_tokenizer):
    tmp_path = tmp_path_factory.mktemp("eval")
    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer)
    config = tiny_config(tmp_path, model_dir, optim={"lr": 5e-2},
                         train={"max_steps": 3, "eval_every": 0})
    result = train(config)
    assert result.outcome == "completed"
    return result.run_dir


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-out")
    return run_eval(trained, out, SMALL), out


def test_writes_every_file(evaluated):
    results, out = evaluated
    for name in ("eval.json", "pairs.csv", "generations.jsonl", "report.html", "summary.md"):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "eval.json").read_text())
    assert on_disk["format"] == "prefalign-eval/1"
    assert set(on_disk) >= {"run", "models", "settings", "heldout", "generation", "cost"}
    assert on_disk["settings"]["decoding"]["max_new_tokens"] == 6
    assert on_disk["run"]["data"]["eval"][0]["fingerprint"]
    assert on_disk["heldout"]["sets"][0]["fingerprint"]
    html = (out / "report.html").read_text()
    assert on_disk["run"]["data"]["train"][0]["fingerprint"] in html


def test_heldout_numbers_match_the_per_pair_csv(evaluated):
    results, out = evaluated
    with open(out / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    overall = results["heldout"]["overall"]
    assert len(rows) == overall["n"] == 8
    correct = [row["correct"] == "True" for row in rows]
    assert overall["accuracy"] == pytest.approx(sum(correct) / len(rows))
    change = [float(r["policy_chosen"]) - float(r["reference_chosen"]) for r in rows]
    assert overall["chosen_logp_change"] == pytest.approx(sum(change) / len(rows), abs=1e-5)
    assert overall["policy_margin"] != pytest.approx(overall["reference_margin"], abs=1e-4)
    assert set(results["heldout"]["slices"]["source"]) == {
        entry["name"] for entry in results["heldout"]["sets"]}
    assert results["heldout"]["template_robustness"]["n"] == 8


def test_log_probs_agree_with_the_probe(evaluated, trained, tmp_path):
    """The probe scores a response through a different path (full logits); same numbers."""
    results, _ = evaluated
    row = pair_rows(36)[24:][0]
    pair_id_lines = results["heldout"]["per_pair"]["pair_id"]
    index = next((i for i, pid in enumerate(pair_id_lines) if pid.endswith(":1")), None)
    if index is None:
        pytest.skip("the seeded sample left out the first held-out pair")
    probed = probe(trained, row["prompt"], [row["chosen"]]).responses[0]
    per_pair = results["heldout"]["per_pair"]
    assert per_pair["reference_chosen"][index] == pytest.approx(probed.reference_logp, abs=1e-4)
    assert per_pair["policy_chosen"][index] == pytest.approx(probed.policy_logp, abs=1e-4)


def test_generation_and_cost_sections(evaluated):
    results, out = evaluated
    generation = results["generation"]
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {row["kind"] for row in rows} == {"harmful", "benign"}
    for kind in ("harmful", "benign"):
        for model in ("reference", "policy"):
            rate = generation[kind][model]
            flags = [row[f"{model}_refused"] for row in rows if row["kind"] == kind]
            assert rate["n"] == 3 and rate["rate"] == pytest.approx(sum(flags) / 3)
    assert all(row["policy_tokens"] <= 6 for row in rows)
    cost = results["cost"]
    assert cost["perplexity"]["heldout_chosen"]["n"] == 8
    assert cost["perplexity"]["helpful"]["n"] == 3
    assert cost["perplexity"]["helpful"]["policy"] > 1
    assert cost["kl"]["n"] <= 4 and cost["kl"]["mean"] is not None


def test_cli_runs_pairs_only_and_prints_the_headline(trained, tmp_path, capsys):
    out = tmp_path / "ev"
    code = main(["eval", str(trained), "--out", str(out), "--max-pairs", "5", "--prompts",
                 "none", "--helpful-pairs", "0", "--template", "none"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "accuracy" in printed.lower()
    results = json.loads((out / "eval.json").read_text())
    assert "generation" not in results and "kl" not in results["cost"]
    assert "template_robustness" not in results["heldout"]


def test_cpu_matmul_torch_scores_the_pairs_as_onednn_does(trained, tmp_path):
    """`--cpu-matmul torch` (torch's BLAS) against the default (oneDNN on x86-64): the same
    held-out log-probs within float32 summation-order noise, the setting recorded."""
    code = main(["eval", str(trained), "--out", str(tmp_path / "torch"), "--max-pairs", "6",
                 "--prompts", "none", "--helpful-pairs", "0", "--template", "none",
                 "--kl-prompts", "0", "--cpu-matmul", "torch"])
    assert code == 0
    results = [json.loads((out / "eval.json").read_text())
               for out in (tmp_path / "torch", _pairs_only(trained, tmp_path / "default"))]
    assert [r["settings"]["cpu_matmul"] for r in results] == ["torch", "auto"]
    plain, routed = (r["heldout"]["overall"] for r in results)
    assert plain["accuracy"] == routed["accuracy"]
    for key in ("loss", "margin", "policy_margin"):
        assert plain[key] == pytest.approx(routed[key], rel=1e-5, abs=1e-5)


def _pairs_only(trained, out):
    assert main(["eval", str(trained), "--out", str(out), "--max-pairs", "6", "--prompts", "none",
                 "--helpful-pairs", "0", "--template", "none", "--kl-prompts", "0"]) == 0
    return out


def test_cli_refuses_a_directory_that_is_not_a_finished_run(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_option_fails_before_loading(trained, tmp_path, capsys):
    assert main(["eval", str(trained), "--out", str(tmp_path / "o"), "--max-pairs", "-1"]) == 2
    assert "max_pairs" in capsys.readouterr().err


def test_generation_only_evaluation_has_no_pair_sections(trained, tmp_path):
    options = EvalOptions(max_pairs=0, harmful=2, benign=2, kl_prompts=0, helpful_pairs=0,
                          decoding=DecodeSettings(max_new_tokens=4, batch_size=4))
    results = run_eval(trained, tmp_path / "gen", options)
    assert results["heldout"] is None and results["cost"] == {"perplexity": {}}
    assert results["generation"]["harmful"]["policy"]["n"] == 2
    html = (tmp_path / "gen" / "report.html").read_text()
    assert "not measured" in html.lower()
    assert not (tmp_path / "gen" / "pairs.csv").exists()


def test_a_bad_prompt_file_names_file_line_and_field(trained, tmp_path, capsys):
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"prompt": "Say hi.", "kind": "benign"}\n{"text": "no prompt field"}\n')
    out = tmp_path / "o"
    assert main(["eval", str(trained), "--out", str(out), "--prompts", str(bad)]) == 1
    error = capsys.readouterr().err
    assert f"{bad}:2" in error and "prompt" in error
    assert not out.exists()


def test_reference_option_compares_against_another_model(trained, tmp_path):
    """With the policy itself as --reference, nothing changed: zero log-prob changes, zero KL,
    identical answers, and every pair's reward margin 0 (a tie counts as wrong)."""
    options = EvalOptions(reference=str(trained / "final"), max_pairs=4, harmful=2, benign=2,
                          kl_prompts=2, helpful_pairs=0, alternate_template=None,
                          decoding=DecodeSettings(max_new_tokens=4, batch_size=4))
    results = run_eval(trained, tmp_path / "same", options)
    assert results["models"]["reference"]["source"] == str(trained / "final")
    overall = results["heldout"]["overall"]
    assert overall["chosen_logp_change"] == pytest.approx(0.0, abs=1e-4)
    assert overall["rejected_logp_change"] == pytest.approx(0.0, abs=1e-4)
    assert results["cost"]["kl"]["mean"] == pytest.approx(0.0, abs=1e-4)
    rows = [json.loads(line) for line in
            (tmp_path / "same" / "generations.jsonl").read_text().splitlines()]
    assert all(row["reference_response"] == row["policy_response"] for row in rows)


def test_samples_are_answered_by_both_models_and_shown(trained, tmp_path):
    """--samples: the run's own held-out pairs as conversations, both models' replies in eval.json
    and side by side in report.html; nothing else needs to run."""
    heldout = trained.parent.parent / "data" / "eval.jsonl"
    options = EvalOptions(max_pairs=0, prompt_sets=(), helpful=None, samples=(str(heldout),),
                          max_samples=3, sample_max_new_tokens=5,
                          decoding=DecodeSettings(max_new_tokens=2, batch_size=4))
    results = run_eval(trained, tmp_path / "samples", options)
    section = results["samples"]
    assert section["n"] == 3 and section["decoding"]["max_new_tokens"] == 5
    assert all(row["policy_tokens"] <= 5 and row["source"] == str(heldout)
               for row in section["rows"])
    assert results["settings"]["samples"] == [str(heldout)]
    html = (tmp_path / "samples" / "report.html").read_text()
    assert "Replies, before and after" in html and section["rows"][0]["prompt"] in html
