"""`import prefalign` as a notebook user would use it, run as a script in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import prefalign
from prefalign.config import ConfigError
from run_helpers import pair_rows

TESTS = Path(__file__).resolve().parent

SCRIPT = """
import json, os, sys
from pathlib import Path

import prefalign
from tiny import build_tiny_tokenizer
from tiny_models import tiny_model_dir

work = Path(sys.argv[1])
rows = json.loads(Path(sys.argv[2]).read_text())
model = tiny_model_dir(work / "model", build_tiny_tokenizer())
before = dict(os.environ)

result = prefalign.train(
    {"model": {"source": str(model)}, "run": {"output_dir": str(work / "runs"), "name": "nb"}},
    train_data=rows[:16], eval_data=rows[16:],
    overrides={"train.max_steps": 2, "train.threads": 1},
    optim__lr=1e-3, **{"data.max_length": 128},
)
report = prefalign.evaluate(result.run_dir, work / "eval", prompt_sets=[], max_pairs=8,
                            helpful=None, alternate_template=None, kl_prompts=0)
pairs = prefalign.load_pairs(rows).pairs
changed = sorted(k for k in set(os.environ) | set(before) if os.environ.get(k) != before.get(k))
print(json.dumps({"outcome": result.outcome, "steps": result.steps, "pairs": len(pairs),
                  "eval_pairs": report["heldout"]["overall"]["n"], "env_changed": changed,
                  "train_source": json.loads((result.run_dir / "manifest.json").read_text())
                  ["config"]["data"]["train"]}))
"""


def test_a_notebook_script_trains_evaluates_and_leaves_the_process_alone(tmp_path,
                                                                         prefalign_cache):
    rows = tmp_path / "rows.json"
    rows.write_text(__import__("json").dumps(pair_rows(24)))
    script = tmp_path / "notebook.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get(
        "PYTHONPATH", "")]), "PREFALIGN_CACHE": str(prefalign_cache)}
    env.pop("ONEDNN_PRIMITIVE_CACHE_CAPACITY", None)
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(rows)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert out["outcome"] == "completed" and out["steps"] == 2
    assert out["pairs"] == 24 and out["eval_pairs"] == 8
    assert out["env_changed"] == []  # no oneDNN cache variables without tune_process=True
    (train_file,) = out["train_source"]
    assert Path(train_file).parent == prefalign_cache / "inputs"  # named by content


def test_overrides_from_a_mapping_and_keywords_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1.0e-4\ntrain:\n  max_steps: 9\n")
    config = prefalign.resolve_config(path, {"optim.lr": 2e-5, "train.max_steps": 3},
                                      train__max_steps=4)
    assert (config.optim.lr, config.train.max_steps) == (2e-5, 4)
    assert prefalign.resolve_config(config, train__batch_size=2).train.batch_size == 2


@pytest.mark.parametrize(("config", "overrides", "message"), [
    ({"optim": {"lr": -1}}, {}, "optim.lr: must be > 0"),
    (None, {"optim": 1}, "expected section.key"),
    (None, {"optim.nope": 1}, "nope"),
    (42, {}, "expected a YAML path, a dict or a Config"),
])
def test_bad_configs_and_overrides_name_the_key(config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        prefalign.resolve_config(config, overrides)


def test_importing_prefalign_is_light():
    code = ("import sys, prefalign\n"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_audit_streams_the_sources_and_flags_a_length_bias(tmp_path):
    """Every chosen reply longer than its rejected one: the length-only rule scores 1.0, which
    the audit flags; leakage counts the prompts the held-out file shares."""
    rows = [{"prompt": f"Q{i}?", "chosen": "a long and careful answer", "rejected": "no"}
            for i in range(10)]
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(__import__("json").dumps(r) + "\n" for r in rows[:3]))
    report = prefalign.audit(rows, eval_sources=[heldout])
    assert report.length_bias.length_only_accuracy == 1.0
    assert any("length" in flag for flag in report.flags)
    assert report.leakage.leaked_pairs == 3


def test_reward_model_and_sft_train_from_a_dict_and_rows(tmp_path, tiny_tokenizer):
    """The other trainers take the same kinds of config and data as `prefalign.train`."""
    from run_helpers import conversation_rows
    from tiny_models import tiny_model_dir

    model = tiny_model_dir(tmp_path / "model", tiny_tokenizer)
    base = {"model": {"source": str(model)}, "run": {"output_dir": str(tmp_path / "runs")},
            "train": {"max_steps": 1, "threads": 1}, "data": {"max_length": 128}}
    rm = prefalign.reward_model(base, train_data=pair_rows(8), eval_data=[], run__name="rm")
    sft = prefalign.sft(base, train_data=conversation_rows(8), eval_data=[], run__name="sft")
    assert (rm.outcome, sft.outcome) == ("completed", "completed")
    assert (rm.run_dir / "final" / "config.json").is_file()
