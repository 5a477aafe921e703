"""What `prefalign grpo` refuses before any model loads: keys it does not use, a μ that a
checkpoint could split, judges that do not resolve or cannot score the prompts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prefalign.config import (
    Config,
    ConfigError,
    DataSection,
    LossSection,
    RmSection,
    SftSection,
)
from prefalign.engine.sampling.prompts import PromptRow
from prefalign.judges.base import KIND_COLUMN, KINDS, JudgeError
from prefalign.judges.combine import Panel
from prefalign.judges.spec import load_panel

REFERENCES = ("frozen_copy", "adapter_off")


def check_grpo_config(config: Config) -> None:
    """ConfigError naming the key for everything grpo would otherwise ignore or break on."""
    grpo, train = config.grpo, config.train
    if grpo.prompts is None:
        raise ConfigError("grpo.prompts: name the prompt file to sample from (JSONL rows with "
                          "a `prompt`, as `prefalign generate --prompts` reads)")
    for section, default, what in (("loss", LossSection(), "its loss is grpo's own (grpo.*)"),
                                   ("data", DataSection(), "prompts come from grpo.prompts"),
                                   ("sft", SftSection(), "it is prefalign sft's"),
                                   ("rm", RmSection(), "it is prefalign rm's")):
        if getattr(config, section) != default:
            raise ConfigError(f"{section}: grpo does not use this section ({what}); remove it")
    if grpo.beta > 0 and config.reference.strategy not in REFERENCES:
        raise ConfigError(f"reference.strategy: grpo's KL reference is frozen_copy or "
                          f"adapter_off (with LoRA), got {config.reference.strategy}")
    if config.reference.cache is not None:
        raise ConfigError("reference.cache: grpo scores its reference on fresh samples; "
                          "remove it")
    if config.reference.source is not None:
        raise ConfigError("reference.source: grpo's KL reference is the model it starts "
                          "from; remove it")
    mu = grpo.mu
    if train.save_every % mu:
        raise ConfigError(f"train.save_every: must be a multiple of grpo.mu ({mu}), so that "
                          f"a checkpoint never splits a sampled batch's passes")
    if train.max_steps is not None and train.max_steps % mu:
        raise ConfigError(f"train.max_steps: must be a multiple of grpo.mu ({mu}), each "
                          f"sampled batch serving mu steps")


def load_judges(specs: Sequence[str], rows: Mapping[str, list[PromptRow]]) -> Panel:
    """The judges summed (each resolved now), and a check that the refusal judge finds every
    prompt's `kind`; ConfigError naming grpo.judges or the prompt file otherwise."""
    try:
        panel = load_panel(list(specs))
    except JudgeError as error:
        raise ConfigError(f"grpo.judges: {error}") from None
    if any(entry.judge.id == "refusal" for entry in panel.judges):
        for name, split_rows in rows.items():
            key = "grpo.prompts" if name == "train" else "grpo.eval_prompts"
            bad = [row for row in split_rows if row.columns.get(KIND_COLUMN) not in KINDS]
            if bad:
                raise ConfigError(f"{key}: the refusal judge needs a `{KIND_COLUMN}` column "
                                  f"(harmful | benign) on every prompt; line {bad[0].line} "
                                  f"({bad[0].id}) has {bad[0].columns.get(KIND_COLUMN)!r}")
    return panel
