"""Every config in configs/ loads and validates; tiny.yaml's model is what its script writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from prefalign.config import load_config

REPO = Path(__file__).resolve().parents[1]
LOOP_CONFIGS = sorted((REPO / "configs").glob("loop-*.yaml"))  # `prefalign loop` configs
CONFIGS = sorted(set((REPO / "configs").glob("*.yaml")) - set(LOOP_CONFIGS))


def test_the_examples_the_readme_promises_are_shipped():
    names = {path.name for path in CONFIGS}
    assert {"dpo-lora.yaml", "dpo-full.yaml", "simpo.yaml", "ipo.yaml", "tiny.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_shipped_config_validates(path):
    config = load_config(path)
    assert config.run.name, f"{path.name}: give each example its own run.name"


def test_examples_use_what_their_names_say():
    load = {path.stem: load_config(path) for path in CONFIGS}
    lora = load["dpo-lora"]
    assert lora.lora.enabled and lora.reference.strategy == "adapter_off"
    assert lora.lora.r == 16 and lora.lora.target_modules == ("q_proj", "v_proj")
    assert lora.data.train == ("bundled:hh-harmless-train",)
    assert lora.data.eval == ("bundled:hh-harmless-heldout",)
    full = load["dpo-full"]
    assert not full.lora.enabled and full.reference.strategy == "precomputed"
    assert load["simpo"].loss.name == "simpo" and load["simpo"].reference.strategy == "none"
    assert load["ipo"].loss.name == "ipo"


def test_the_tone_recipe_is_lora_dpo_on_the_bundled_tone_set():
    tone = load_config(REPO / "configs" / "tone.yaml")
    assert tone.data.train == ("bundled:tone-train",) and tone.data.eval == ()
    assert tone.lora.enabled and tone.reference.strategy == "precomputed"
    assert tone.loss.name == "dpo" and tone.model.source == "smollm2-135m-instruct"


def test_the_grpo_safety_recipe_resolves_its_prompts_and_judges():
    """Everything `prefalign grpo` checks before a model loads: the bundled prompt files (both
    kinds in each), the refusal judge finding every prompt's kind, μ against the schedule. Its
    reward models are the runs configs/rm-safety.yaml and configs/rm-helpful.yaml write, each
    scoped to the kind it prefers the right reply for (stood in for by the refusal judge here:
    tests/trainers/test_shipped_configs_train.py trains the recipe with tiny reward models)."""
    from prefalign.trainers.grpo.method import GrpoMethod

    config = load_config(REPO / "configs" / "grpo-safety.yaml")
    assert config.lora.enabled and config.reference.strategy == "adapter_off"
    assert config.model.source == "smollm2-135m-instruct" and config.grpo.beta > 0
    runs = {name: load_config(REPO / "configs" / f"{name}.yaml").run
            for name in ("rm-safety", "rm-helpful")}
    assert config.grpo.harmful_judges == (f"rm:{runs['rm-safety'].output_dir}/rm-safety",)
    assert config.grpo.benign_judges == (f"rm:{runs['rm-helpful'].output_dir}/rm-helpful",)
    assert runs["rm-safety"].name == "rm-safety" and runs["rm-helpful"].name == "rm-helpful"
    method = GrpoMethod(load_config(REPO / "configs" / "grpo-safety.yaml",
                                    ["grpo.harmful_judges=[refusal]",
                                     "grpo.benign_judges=[refusal]"]))
    for rows in method.prompt_rows.values():
        kinds = {row.columns["kind"] for row in rows}
        assert kinds == {"harmful", "benign"}
    assert [entry.judge.id for entry in method.panel.judges] == [
        "refusal", "refusal[harmful]", "refusal[benign]"]


def _script():
    spec = importlib.util.spec_from_file_location("make_tiny_model", REPO / "scripts" / "make_tiny_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_config_points_at_the_directory_its_script_writes(tmp_path, tiny_tokenizer):
    """The script's model, written here with the tiny test tokenizer, loads as a model source."""
    from transformers import AutoModelForCausalLM

    from prefalign.sources import resolve_model_source

    script = _script()
    assert load_config(REPO / "configs" / "tiny.yaml").model.source == str(script.DEFAULT_OUT)
    out = script.write_tiny_model(tmp_path / "tiny-model", tiny_tokenizer)
    source = resolve_model_source(out)
    model = AutoModelForCausalLM.from_pretrained(source.path, use_safetensors=True,
                                                 **source.pretrained_kwargs())
    assert model.config.num_hidden_layers == 2
    assert model.get_input_embeddings().weight.shape[0] == len(tiny_tokenizer)


@pytest.mark.parametrize("path", LOOP_CONFIGS, ids=[path.name for path in LOOP_CONFIGS])
def test_shipped_loop_config_validates(path):
    """Every round's train config included; the prompt files resolve and carry both kinds."""
    from prefalign.data.bundled import resolve_data_path
    from prefalign.engine.sampling.prompts import read_prompt_file
    from prefalign.loop.rounds_config import load_loop_config, round_train_config

    config = load_loop_config(path)
    assert config.name == path.stem
    assert round_train_config(config, config.rounds).model.source.endswith("run/final")
    for name in config.prompts:
        kinds = {row.columns.get("kind") for row in read_prompt_file(resolve_data_path(name))}
        assert kinds == {"harmful", "benign"}


def test_the_loop_safety_recipe_keeps_its_prompts_apart_from_the_evaluation():
    from prefalign.loop.rounds_config import load_loop_config

    config = load_loop_config(REPO / "configs" / "loop-safety.yaml")
    assert config.prompts == ("bundled:grpo-safety-train",)
    assert config.eval is not None and config.eval.prompt_sets is None  # eval's own sets
    assert config.pairs.judges == ("refusal",) and 1 <= config.rounds <= 2
