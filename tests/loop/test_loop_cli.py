"""The round trip on the command line: `pairs build` -> `data validate` (same fingerprint as the
lineage record) -> `data audit` (a judge that prefers long answers shows up as length bias) ->
`train` one step on the pairs with a tiny real model."""

from __future__ import annotations

import json

from loop.loop_files import write_loop_files
from prefalign.cli.main import main
from prefalign.cli.train import config_yaml
from run_helpers import tiny_config
from tiny_models import tiny_model_dir


def test_pairs_build_audit_train(tmp_path, tiny_tokenizer, capsys):
    files = write_loop_files(tmp_path)
    out = tmp_path / "pairs.jsonl"
    assert main(["pairs", "build", str(files["samples"]), "--prompts", str(files["prompts"]),
                 "--judge", f"{files['judges']}:length", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    lineage = json.loads((tmp_path / "pairs.jsonl.lineage.json").read_text(encoding="utf-8"))
    assert "wrote 3 pair(s)" in printed and "1 tied within the margin" in printed
    assert f"fingerprint: {lineage['fingerprint']}" in printed

    assert main(["data", "validate", str(out)]) == 0
    assert f"fingerprint: {lineage['fingerprint']}" in capsys.readouterr().out

    audit_json = tmp_path / "audit.json"
    assert main(["data", "audit", str(out), "--json", str(audit_json)]) == 0
    capsys.readouterr()
    bias = json.loads(audit_json.read_text(encoding="utf-8"))["length_bias"]
    assert bias["frac_chosen_longer"] == 1.0 and bias["length_only_accuracy"] == 1.0
    assert bias["length_only_rule"] == "prefer longer"
    assert main(["data", "audit", str(out), "--strict"]) == 1  # the length flag is raised

    config = tiny_config(tmp_path, tiny_model_dir(tmp_path, tiny_tokenizer))
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config_yaml(config), encoding="utf-8")
    assert main(["train", "-c", str(config_file), f"data.train=[{out}]", "train.max_steps=1",
                 "train.batch_size=2"]) == 0
    manifest = json.loads((tmp_path / "runs" / "tiny" / "manifest.json").read_text("utf-8"))
    assert manifest["outcome"] == "completed"
    assert json.dumps(manifest).count(str(out)) >= 1  # the run names the pair file it trained on
