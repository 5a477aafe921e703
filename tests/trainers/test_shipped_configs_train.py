"""Every shipped config trains: two steps of each file in configs/, with its model swapped for a
tiny Llama and its data for tiny pairs (tiny prompt files for the GRPO recipes), everything else
as shipped (gradient checkpointing, reference strategy, LoRA, loss, schedule, batch, precision,
judges, sampling).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefalign.config import load_config
from prefalign.trainers.dpo.train import train
from prefalign.trainers.grpo.train import train_grpo
from prefalign.trainers.rm.train import train_rm
from prefalign.trainers.sft.train import train_sft
from run_helpers import conversation_rows, pair_rows, write_pairs
from tiny_models import tiny_model_dir

# Training configs; configs/loop*.yaml configure `prefalign loop` (tests/test_shipped_configs.py)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CONFIGS = sorted(path for path in CONFIG_DIR.glob("*.yaml") if not path.name.startswith("loop"))


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_shipped_config_trains_two_steps(path, tmp_path, tiny_tokenizer, monkeypatch):
    monkeypatch.setenv("PREFALIGN_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_model_dir(tmp_path, tiny_tokenizer)
    common = [f"model.source={model_dir}", f"run.output_dir={tmp_path / 'runs'}",
              "train.max_steps=2", "train.threads=1"]
    if path.name.startswith("grpo"):  # GRPO recipes: configs/grpo*.yaml, run by `prefalign grpo`
        prompts = _prompt_file(tmp_path / "prompts.jsonl")
        config = load_config(path, [*common, f"grpo.prompts={prompts}",
                                    f"grpo.eval_prompts={prompts}",
                                    *_tiny_reward_models(load_config(path).grpo, common,
                                                         tmp_path)])
        _assert_trained(train_grpo(config))
        return
    sft = path.name.startswith("sft")  # SFT recipes: configs/sft*.yaml, run by `prefalign sft`
    rows = conversation_rows(50) if sft else pair_rows(50)
    pairs = write_pairs(tmp_path / "train.jsonl", rows=rows[:40])
    heldout = write_pairs(tmp_path / "eval.jsonl", rows=rows[40:])
    config = load_config(path, [*common, f"data.train=[{pairs}]", f"data.eval=[{heldout}]"])
    trainer = train_sft if sft else train_rm if path.name.startswith("rm-") else train
    _assert_trained(trainer(config))


def _tiny_reward_models(grpo, common: list[str], tmp_path: Path) -> list[str]:
    """Overrides pointing a recipe's rm: judges at tiny reward models trained here with the
    recipe's own reward-model configs (configs/rm-NAME.yaml for rm:runs/rm-NAME)."""
    pairs = write_pairs(tmp_path / "rm-pairs.jsonl", rows=pair_rows(16))
    overrides = []
    for key in ("judges", "harmful_judges", "benign_judges"):
        specs = []
        for spec in getattr(grpo, key):
            if spec.startswith("rm:"):
                target, at, weight = spec.removeprefix("rm:").partition("@")
                rm_config = load_config(CONFIG_DIR / f"{Path(target).name}.yaml",
                                        [*common, f"data.train=[{pairs}]",
                                         f"data.eval=[{pairs}]"])
                spec = f"rm:{train_rm(rm_config).run_dir}{at}{weight}"
            specs.append(spec)
        overrides.append(f"grpo.{key}=[{','.join(specs)}]")
    return overrides


def _assert_trained(result) -> None:
    assert result.outcome == "completed" and result.steps == 2
    assert (result.run_dir / "final").is_dir()


def _prompt_file(path: Path) -> Path:
    """Eight prompts, alternately harmful and benign (the refusal judge reads `kind`)."""
    rows = [{"id": f"p{i}", "prompt": f"Question number {i}?",
             "kind": "harmful" if i % 2 else "benign"} for i in range(8)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
