"""`prefalign loop` end to end on a tiny real model: two rounds, every round's files and
provenance, the rounds table, and a loop stopped after a stage resumed (through the CLI) to the
same outputs as an uninterrupted one, with no stage redone and no row written twice."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from loop.rounds_helpers import loop_config, pair_keys, read_jsonl, write_yaml
from prefalign.api import loop as run_loop_api
from prefalign.cli.main import main
from prefalign.loop.rounds_state import LoopStateError
from run_helpers import final_weights, logged_losses, max_weight_difference
from tiny_models import tiny_model_dir

STAGES = ["samples", "pairs", "train", "eval"]


class Stop(Exception):
    """Raised by a stage hook to stop the loop as a crash would."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer,
                          initializer_range=0.2)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, model_dir):
    """An uninterrupted two-round loop: (its config dict, its result, the stages run)."""
    tmp_path = tmp_path_factory.mktemp("loop")
    config = loop_config(tmp_path, model_dir)
    stages: list[tuple[int, str]] = []
    result = run_loop_api(config, on_stage=lambda r, s: stages.append((r, s)))
    return config, result, stages


def test_two_rounds_write_every_round_and_the_table(finished, model_dir):
    config, result, stages = finished
    assert stages == [(r, s) for r in (1, 2) for s in STAGES]
    loop_dir = result.loop_dir
    for r in (1, 2):
        here = loop_dir / f"round-{r}"
        for name in ("samples.jsonl", "samples.jsonl.manifest.json", "pairs.jsonl",
                     "pairs.jsonl.lineage.json", "run/final", "eval/eval.json",
                     "eval/summary.md"):
            assert (here / name).exists(), f"round {r}: {name}"
        assert len(read_jsonl(here / "samples.jsonl")) == len(read_jsonl(loop_dir / "prompts.jsonl")) * 3
    rows = json.loads((loop_dir / "rounds.json").read_text())["rounds"]
    assert [row["round"] for row in rows] == [0, 1, 2]
    assert rows[0]["model"] == str(model_dir)
    for row in rows[1:]:
        lineage = json.loads((loop_dir / f"round-{row['round']}" / "pairs.jsonl.lineage.json")
                             .read_text())
        assert row["counts"]["written"] == lineage["counts"]["written"] > 0
        assert row["judge_mean"] == pytest.approx(lineage["scores"]["combined_mean"])
        assert row["train"] == {"outcome": "completed", "steps": 1}
        assert row["eval"]["harmful_refusal"]["n"] == 2
        assert row["eval"]["heldout_accuracy"] is not None
        assert set(row["seconds"]) == {"samples", "pairs", "train", "eval"}
        assert all(seconds >= 0 for seconds in row["seconds"].values())
    table = (loop_dir / "rounds.md").read_text()
    assert "| 0 (original) |" in table and "| 2 | " in table


def test_each_round_starts_from_the_last_and_records_it(finished, model_dir):
    _, result, _ = finished
    loop_dir = result.loop_dir
    one, two = loop_dir / "round-1", loop_dir / "round-2"
    manifest = json.loads((two / "run" / "manifest.json").read_text())
    assert manifest["config"]["model"]["source"] == str(one / "run" / "final")
    assert manifest["config"]["reference"]["source"] == str(model_dir)  # reference: original
    assert manifest["reference"]["source"] == str(model_dir)
    # Against the original the round-2 policy (round 1's) starts off the reference: loss ≠ log 2.
    assert logged_losses(two / "run")[0] != pytest.approx(math.log(2), abs=1e-4)
    assert logged_losses(one / "run")[0] == pytest.approx(math.log(2), abs=1e-4)
    assert manifest["config"]["data"]["train"] == [str(two / "pairs.jsonl")]
    generator = json.loads((two / "samples.jsonl.manifest.json").read_text())["model"]
    first = json.loads((one / "samples.jsonl.manifest.json").read_text())["model"]
    assert generator["weight_hash"] != first["weight_hash"]  # round 2 sampled the new policy
    for r, here in ((1, one), (2, two)):
        rows = read_jsonl(here / "pairs.jsonl")
        expected = json.loads((here / "samples.jsonl.manifest.json").read_text())
        for row in rows:
            assert row["round"] == r and row["metadata"]["round"] == r
            assert row["metadata"]["generator"]["weight_hash"] == expected["model"]["weight_hash"]
            assert row["metadata"]["judges"]["judges"][0]["id"].endswith("judges.py:length")
            assert row["metadata"]["prompt_set"]["fingerprint"] == expected["prompts"]["sha256"]
    evaluated = json.loads((two / "eval" / "eval.json").read_text())
    assert evaluated["models"]["reference"]["source"] == str(model_dir)


def test_a_stopped_loop_resumes_to_the_same_outputs(finished, tmp_path, model_dir):
    config, result, _ = finished
    stopped = loop_config(tmp_path, model_dir, name="stopped")

    def stop_after_round_2_pairs(round_: int, stage: str) -> None:
        if (round_, stage) == (2, "pairs"):
            raise Stop

    with pytest.raises(Stop):
        run_loop_api(stopped, on_stage=stop_after_round_2_pairs)
    loop_dir = tmp_path / "loops" / "stopped"
    state = json.loads((loop_dir / "state.json").read_text())
    assert set(state["stages"]["2"]) == {"samples", "pairs"}
    assert not (loop_dir / "round-2" / "run").exists()

    path = write_yaml(tmp_path / "loop.yaml", stopped)
    assert main(["loop", "-c", str(path)]) == 2  # a loop directory without --resume
    resumed: list[tuple[int, str]] = []
    run_loop_api(stopped, resume=True, on_stage=lambda r, s: resumed.append((r, s)))
    assert resumed == [(2, "train"), (2, "eval")]  # nothing done is redone
    assert main(["loop", "-c", str(path), "--resume", "--quiet"]) == 0  # all done: no-op

    for r in (1, 2):
        ours, theirs = loop_dir / f"round-{r}", result.loop_dir / f"round-{r}"
        assert (ours / "samples.jsonl").read_bytes() == (theirs / "samples.jsonl").read_bytes()
        assert pair_keys(ours / "pairs.jsonl") == pair_keys(theirs / "pairs.jsonl")
        assert max_weight_difference(final_weights(ours / "run"),
                                     final_weights(theirs / "run")) < 1e-6
    rows = json.loads((loop_dir / "rounds.json").read_text())["rounds"]
    assert [row["counts"] for row in rows[1:]] == [
        row["counts"] for row in json.loads((result.loop_dir / "rounds.json").read_text())["rounds"][1:]]


def test_resume_refuses_another_config_and_changed_outputs(finished, tmp_path):
    config, result, _ = finished
    copy_dir = tmp_path / "loops" / config["name"]
    shutil.copytree(result.loop_dir, copy_dir)
    moved = {**config, "output_dir": str(tmp_path / "loops")}
    with pytest.raises(LoopStateError, match=r"another config \(differs in: loop\.sampling\.n\)"):
        run_loop_api(moved, resume=True, overrides={"sampling.n": 4})
    pairs = copy_dir / "round-1" / "pairs.jsonl"
    pairs.write_text(pairs.read_text() + "\n", encoding="utf-8")
    with pytest.raises(LoopStateError, match=r"round-1/pairs\.jsonl: round 1's pairs stage"):
        run_loop_api(moved, resume=True)
