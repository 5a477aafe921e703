"""Bad GRPO configs fail before any model loads, naming the key; the CLI and prefalign.grpo
train and refuse."""

from __future__ import annotations

import pytest
from grpo_helpers import grpo_config

import prefalign
from prefalign.cli.main import main
from prefalign.config import ConfigError
from prefalign.engine.manifest import read_manifest
from prefalign.trainers.grpo.method import GrpoMethod

MISSING_MODEL = "/nonexistent/model"  # loading it would fail: the errors come before


@pytest.mark.parametrize(("sections", "message"), [
    ({"grpo": {"group_size": 1}}, r"grpo\.group_size: must be >= 2"),
    ({"grpo": {"epsilon": 1.5}}, r"grpo\.epsilon: must be in \(0, 1\)"),
    ({"grpo": {"epsilon_high": -0.1}}, r"grpo\.epsilon_high"),
    ({"grpo": {"mu": 0}}, r"grpo\.mu"),
    ({"grpo": {"beta": -1.0}}, r"grpo\.beta"),
    ({"grpo": {"estimator": "rloo", "scale": "none"}}, r"grpo\.scale: rloo"),
    ({"grpo": {"mu": 2}, "train": {"max_steps": 3}}, r"train\.max_steps: must be a multiple"),
    ({"grpo": {"mu": 2}, "train": {"save_every": 3}}, r"train\.save_every: must be a multiple"),
    ({"grpo": {"judges": ["nosuchmodule_xyz:reward"]}}, r"grpo\.judges: .*nosuchmodule_xyz"),
    ({"grpo": {"judges": ["rm:/nonexistent/run"]}}, r"grpo\.judges: .*rm:/nonexistent/run"),
    ({"grpo": {"judges": ["refusal@x"]}}, r"grpo\.judges: .*weight"),
    ({"grpo": {"harmful_judges": ["rm:/nonexistent/run"]}},
     r"grpo\.harmful_judges: .*rm:/nonexistent/run"),
    # every spec is parsed before the first loads: the bad weight, not the missing run
    ({"grpo": {"judges": ["rm:/nonexistent/run"], "benign_judges": ["refusal@x"]}},
     r"grpo\.benign_judges: .*weight"),
    ({"grpo": {"judges": [], "harmful_judges": ["refusal"], "benign_judges": ["refusal"],
               "group_size": 2}}, None),
    ({"grpo": {"prompts": "/nonexistent/prompts.jsonl"}}, r"grpo\.prompts: .*no such"),
    ({"loss": {"name": "ipo"}}, r"loss: grpo does not use"),
    ({"data": {"max_length": 64}}, r"data: grpo does not use"),
    ({"reference": {"source": "/some/model"}, "grpo": {"beta": 0.04}},
     r"reference\.source: grpo's KL reference is the model it starts from"),
])
def test_bad_config_fails_before_the_model_loads(tmp_path, sections, message):
    if message is None:  # the same judge scoped to each kind is two judges, not a duplicate
        GrpoMethod(grpo_config(tmp_path, MISSING_MODEL, **sections))
        return
    with pytest.raises(ConfigError, match=message):
        GrpoMethod(grpo_config(tmp_path, MISSING_MODEL, **sections))


def test_refusal_judge_needs_every_prompts_kind(tmp_path):
    path = tmp_path / "no-kind.jsonl"
    path.write_text('{"prompt": "hi"}\n', encoding="utf-8")
    config = grpo_config(tmp_path, MISSING_MODEL, grpo={"prompts": str(path),
                                                        "judges": ["refusal"]})
    with pytest.raises(ConfigError, match=r"grpo\.prompts: the refusal judge .*need a `kind`"):
        GrpoMethod(config)
    scoped = grpo_config(tmp_path, MISSING_MODEL, grpo={"prompts": str(path), "judges": [],
                                                        "benign_judges": ["refusal"]})
    with pytest.raises(ConfigError, match=r"grpo\.prompts: .*kind-scoped judges need"):
        GrpoMethod(scoped)


def test_cli_trains_and_names_a_bad_key(tmp_path, model_dir_cli, capsys):
    config = grpo_config(tmp_path, model_dir_cli)
    path = tmp_path / "grpo.yaml"
    import yaml

    path.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    assert main(["grpo", "-c", str(path), "grpo.group_size=1"]) == 2
    assert "grpo.group_size" in capsys.readouterr().err
    assert main(["grpo", "-c", str(path), "train.max_steps=1"]) == 0


@pytest.fixture(scope="module")
def model_dir_cli(tmp_path_factory, tiny_tokenizer):
    from tiny_models import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("model"), tiny_tokenizer)


def test_api_trains_from_a_dict_with_dotted_overrides(tmp_path, model_dir_cli):
    raw = grpo_config(tmp_path, model_dir_cli).to_dict()
    result = prefalign.grpo(raw, train__max_steps=1, grpo__group_size=3, run__name="api")
    assert result.outcome == "completed" and result.steps == 1
    assert read_manifest(result.run_dir)["grpo"]["group_size"] == 3
    with pytest.raises(ConfigError, match=r"grpo\.group_size"):
        prefalign.grpo(raw, grpo__group_size=1)
