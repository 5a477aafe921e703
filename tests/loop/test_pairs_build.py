"""`pairs build` on hand-written samples: the pairs each strategy makes (a length judge whose
choices can be worked out by hand), provenance and lineage, prompts from the rows or the prompt
file, piecewise judging, and every error path leaving nothing written."""

from __future__ import annotations

import json

import pytest

from loop.loop_files import MANIFEST, PROMPTS, REFUSE, TEXTS, write_jsonl, write_loop_files
from prefalign.cli.main import main
from prefalign.data.load import load_pairs
from prefalign.data.types import DataError
from prefalign.judges.base import JudgeError
from prefalign.judges.spec import load_panel
from prefalign.loop.lineage import file_sha256
from prefalign.loop.pairs import BuildOptions, build_pairs
from prefalign.loop.samples import read_samples


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _lineage(path) -> dict:
    return json.loads(path.with_name(path.name + ".lineage.json").read_text(encoding="utf-8"))


@pytest.fixture
def files(tmp_path):
    return write_loop_files(tmp_path)


def test_best_worst_pairs_by_a_length_judge(files, tmp_path):
    """Longest text chosen, shortest rejected (leading spaces removed first); p3's two samples
    are 26 characters each: a tie, no pair."""
    out = tmp_path / "pairs.jsonl"
    panel = load_panel([f"{files['judges']}:length"])
    report = build_pairs(files["samples"], panel, out, prompts_path=files["prompts"])
    rows = _rows(out)
    assert [row["id"] for row in rows] == ["p0", "p1", "p2"]
    expected = {"p0": (REFUSE, "Sure! Here is how."),
                "p1": (TEXTS["p1"][2], "They steer into the fall."),
                "p2": ("The capital of France is Paris.", "Paris.")}
    for row in rows:
        chosen, rejected = expected[row["id"]]
        assert row["chosen"] == [{"role": "assistant", "content": chosen}]
        assert row["rejected"] == [{"role": "assistant", "content": rejected}]
        assert row["chosen_score"] == len(chosen) and row["rejected_score"] == len(rejected)
    assert rows[2]["prompt"][0] == {"role": "system", "content": "Answer briefly."}
    assert report.counts == {"prompts": 4, "samples": 11, "empty": 0, "unsafe_dropped": 0,
                             "tie": 1, "written": 3}


def test_rows_and_lineage_carry_provenance(files, tmp_path):
    out = tmp_path / "pairs.jsonl"
    panel = load_panel([f"{files['judges']}:length@0.5", "refusal"])
    report = build_pairs(files["samples"], panel, out, prompts_path=files["prompts"],
                         options=BuildOptions(round=2))
    row = _rows(out)[0]
    assert (row["kind"], row["category"], row["round"]) == ("harmful", "crime", 2)
    meta = row["metadata"]
    assert meta["generator"] == {"model": MANIFEST["model"], "weight_hash": "ab" * 32,
                                 "chat_template": "cd" * 32, "settings": MANIFEST["settings"],
                                 "prompts_fingerprint": "ef" * 32}
    judges = meta["judges"]["judges"]
    assert [(j["id"], j["weight"]) for j in judges] == [(f"{files['judges']}:length", 0.5),
                                                       ("refusal", 1.0)]
    assert judges[0]["hash"] == file_sha256(files["judges"])
    assert judges[1]["hash"].startswith("refusal-rules/1@")
    # p0 is harmful: the refusal (38 chars) scores 0.5·38 + 1; "Sure! Here is how." 0.5·18 + 0
    assert meta["chosen"]["scores"] == {f"{files['judges']}:length": 38.0, "refusal": 1.0}
    assert meta["chosen"]["score"] == 20.0 and meta["rejected"]["score"] == 9.0
    assert meta["prompt_set"]["fingerprint"] == "ef" * 32 and meta["round"] == 2
    lineage = _lineage(out)
    assert lineage["fingerprint"] == report.fingerprint and lineage["round"] == 2
    assert lineage["kind"] == "preference_pairs" and lineage["counts"] == report.counts
    samples, prompts = lineage["parents"]
    assert samples["sha256"] == file_sha256(files["samples"]) and samples["manifest"] == MANIFEST
    assert prompts == {"role": "prompts", "path": str(files["prompts"]),
                       "sha256": file_sha256(files["prompts"])}
    assert lineage["settings"]["strategy"] == "best-worst"
    loaded = load_pairs([out]).pairs  # the loaders read the rows, labels as metadata
    assert loaded[0].provenance.meta("category") == "crime"
    # MANIFEST records a prompts fingerprint that is not the prompt file's sha256
    assert report.warnings == [f"{files['prompts']}: its sha256 differs from the prompts "
                               f"fingerprint the samples' manifest records ({'ef' * 32}); the "
                               "samples may come from other prompts"]


def test_without_a_manifest_the_prompt_file_is_the_prompt_set(tmp_path):
    files = write_loop_files(tmp_path, manifest=False)
    out = tmp_path / "o.jsonl"
    report = build_pairs(files["samples"], load_panel(["refusal"]), out,
                         prompts_path=files["prompts"])
    meta = _rows(out)[0]["metadata"]
    assert meta["prompt_set"]["fingerprint"] == file_sha256(files["prompts"])
    assert set(meta["generator"].values()) == {None} and report.warnings == []
    assert _lineage(out)["parents"][0]["manifest"] is None


def test_prompts_from_the_rows_or_the_prompt_file_give_the_same_pairs(tmp_path):
    by_file = write_loop_files(tmp_path / "a")
    in_rows = write_loop_files(tmp_path / "b", with_prompts=True)
    reports = []
    for files, prompts in ((by_file, by_file["prompts"]), (in_rows, None)):
        panel = load_panel([f"{files['judges']}:length"])
        reports.append(build_pairs(files["samples"], panel, files["samples"].parent / "o.jsonl",
                                   prompts_path=prompts))
    assert reports[0].fingerprint == reports[1].fingerprint


def test_min_margin_and_strategies(files, tmp_path):
    panel = load_panel([f"{files['judges']}:length"])
    out = tmp_path / "o.jsonl"
    # p0 spreads 38 - 18 = 20, p1 71 - 25 = 46, p2 31 - 6 = 25: a margin of 24 ties p0 only
    report = build_pairs(files["samples"], panel, out, prompts_path=files["prompts"],
                         options=BuildOptions(min_margin=24))
    assert [r["id"] for r in _rows(out)] == ["p1", "p2"] and report.counts["tie"] == 2
    picks = set()
    for seed in range(8):
        build_pairs(files["samples"], panel, out, prompts_path=files["prompts"],
                    options=BuildOptions(strategy="best-random", seed=seed))
        rows = {r["id"]: r for r in _rows(out)}
        assert rows["p1"]["chosen"][0]["content"] == TEXTS["p1"][2]
        picks.add(rows["p1"]["rejected"][0]["content"])
    assert picks == {TEXTS["p1"][0], REFUSE}  # both samples the best beats


def test_best_writes_sft_rows_that_validate(files, tmp_path, capsys):
    out = tmp_path / "sft.jsonl"
    panel = load_panel([f"{files['judges']}:length"])
    report = build_pairs(files["samples"], panel, out, prompts_path=files["prompts"],
                         options=BuildOptions(strategy="best"))
    rows = _rows(out)
    assert [r["messages"][-1]["content"] for r in rows] == [
        REFUSE, TEXTS["p1"][2], "The capital of France is Paris.", TEXTS["p3"][0]]
    assert _lineage(out)["kind"] == "sft_conversations" and report.counts["written"] == 4
    assert main(["data", "validate", "--sft", str(out)]) == 0
    assert f"fingerprint: {report.fingerprint}" in capsys.readouterr().out


def test_piecewise_drops_unsafe_samples(files, tmp_path):
    """Safety = refusal (1 right, 0 wrong), τ = 0.5: p0 keeps only its refusal (too few for a
    pair), p1 loses its refusal and pairs by length, p2 is unchanged, p3 ties."""
    out = tmp_path / "o.jsonl"
    panel = load_panel([f"{files['judges']}:length"], combine="piecewise", safety="refusal",
                       threshold=0.5)
    report = build_pairs(files["samples"], panel, out, prompts_path=files["prompts"])
    rows = {r["id"]: r for r in _rows(out)}
    assert sorted(rows) == ["p1", "p2"]
    assert rows["p1"]["rejected"][0]["content"] == "They steer into the fall."
    assert report.counts["unsafe_dropped"] == 3
    assert report.counts["too_few"] == 1 and report.counts["tie"] == 1


def test_samples_defects_name_file_line_and_field(tmp_path):
    samples = write_jsonl(tmp_path / "s.jsonl", [
        {"prompt_id": "a", "sample": 0, "text": "hi"},
        {"prompt_id": "b", "sample": -1, "text": "hi", "prompt": "q"},
        {"sample": 0, "text": "hi", "prompt": "q"},
        {"prompt_id": "c", "sample": 0, "text": 3, "prompt": "q"},
        {"prompt_id": "d", "sample": 0, "text": "x", "prompt": [{"role": "assistant",
                                                                 "content": "no"}]},
        {"prompt_id": "e", "sample": 0, "text": "x", "prompt": "q"},
        {"prompt_id": "e", "sample": 0, "text": "y", "prompt": "q"},
    ])
    with pytest.raises(DataError) as error:
        read_samples(samples)
    lines = str(error.value).splitlines()[1:]
    assert lines == [
        f"{samples}:1: prompt: missing: the row has no prompt and no prompt file was given "
        "(--prompts FILE)",
        f"{samples}:2: sample: expected an integer >= 0, got -1",
        f"{samples}:3: prompt_id: missing field",
        f"{samples}:4: text: expected a string, got integer",
        f"{samples}:5: prompt: the prompt must end with a user message, got assistant",
        f"{samples}:7: sample: prompt 'e' has sample 0 twice",
    ]


def test_a_prompt_id_missing_from_the_prompt_file(files, tmp_path, capsys):
    write_jsonl(files["samples"], [{"prompt_id": "zz", "sample": 0, "text": "hi"}])
    code = main(["pairs", "build", str(files["samples"]), "--prompts", str(files["prompts"]),
                 "--judge", "refusal", "-o", str(tmp_path / "o.jsonl")])
    assert code == 1
    assert "samples.jsonl:1: prompt: missing: the row has no prompt and prompt id 'zz' is not " \
           "in the prompt file" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_a_failing_judge_leaves_the_old_output_untouched(files, tmp_path, capsys):
    """The refusal judge needs each prompt's kind; without it, nothing is (over)written."""
    out = tmp_path / "o.jsonl"
    out.write_text("old\n", encoding="utf-8")
    write_jsonl(files["prompts"], [{k: v for k, v in row.items() if k != "kind"}
                                   for row in PROMPTS])
    code = main(["pairs", "build", str(files["samples"]), "--prompts", str(files["prompts"]),
                 "--judge", f"{files['judges']}:length", "--judge", "refusal", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "judge refusal: needs each prompt's `kind` column" in err
    assert "prompt p0 (None)" in err
    assert out.read_text(encoding="utf-8") == "old\n"
    assert not out.with_name("o.jsonl.lineage.json").exists()


def test_nothing_to_write_is_an_error(files, tmp_path):
    panel = load_panel([f"{files['judges']}:kinds"])  # one score per prompt: every prompt ties
    with pytest.raises(ValueError, match="no pairs to write .*tie 4.*nothing written"):
        build_pairs(files["samples"], panel, tmp_path / "o.jsonl", prompts_path=files["prompts"])
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--judge", "refusals"], "unknown judge"),
    (["--judge", "refusal", "--combine", "piecewise"], "needs --safety-judge and --threshold"),
    (["--judge", "refusal", "--threshold", "0.1"], "belong to --combine piecewise"),
    (["--judge", "refusal", "--min-margin", "-1"], "--min-margin must be >= 0"),
])
def test_bad_options_exit_2(files, tmp_path, capsys, args, message):
    code = main(["pairs", "build", str(files["samples"]), "--prompts", str(files["prompts"]),
                 *args, "-o", str(tmp_path / "o.jsonl")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_a_judge_that_raises_is_named(files, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def f(prompts, completions, **kw):\n    raise KeyError('category')\n",
                      encoding="utf-8")
    with pytest.raises(JudgeError, match=f"judge {broken}:f: raised KeyError: 'category'"):
        build_pairs(files["samples"], load_panel([f"{broken}:f"]), tmp_path / "o.jsonl",
                    prompts_path=files["prompts"])
    assert not (tmp_path / "o.jsonl").exists()
