"""What `prefalign grpo` refuses before any model loads: keys it does not use, a μ that a
checkpoint could split, judges that do not resolve or cannot score the prompts."""

from __future__ import annotations

from collections.abc import Mapping

from prefalign.config import (
    Config,
    ConfigError,
    DataSection,
    GrpoSection,
    LossSection,
    RmSection,
    SftSection,
)
from prefalign.engine.sampling.prompts import PromptRow
from prefalign.judges.base import KIND_COLUMN, KINDS, JudgeError
from prefalign.judges.combine import Panel, WeightedJudge, check_combine
from prefalign.judges.scoped import KindScopedJudge
from prefalign.judges.spec import JudgeSpec, load_judge, parse_judge_spec

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


def load_judges(grpo: GrpoSection, rows: Mapping[str, list[PromptRow]]) -> Panel:
    """The judges summed: `grpo.judges` on every prompt, and `grpo.harmful_judges` /
    `grpo.benign_judges` each on its kind's prompts only. Every spec is parsed, and every
    prompt's `kind` checked where the refusal judge or a scoped judge needs it, before the
    first judge loads; ConfigError naming the key or the prompt file otherwise."""
    specs = [(key, spec, kind) for key, kind in JUDGE_KEYS
             for spec in _parsed(key, getattr(grpo, key))]
    ids = [spec.id if kind is None else f"{spec.id}[{kind}]" for _, spec, kind in specs]
    try:
        check_combine("sum", ids, None, None)
    except JudgeError as error:
        raise ConfigError(f"grpo.judges: {error}") from None
    if "refusal" in ids or grpo.harmful_judges or grpo.benign_judges:
        _check_kinds(rows)
    entries = []
    for key, spec, kind in specs:
        try:
            judge = load_judge(spec)
        except JudgeError as error:
            raise ConfigError(f"grpo.{key}: {error}") from None
        entries.append(WeightedJudge(judge if kind is None else KindScopedJudge(judge, kind),
                                     spec.weight))
    return Panel(tuple(entries))


JUDGE_KEYS = (("judges", None), ("harmful_judges", "harmful"), ("benign_judges", "benign"))


def _parsed(key: str, texts: tuple[str, ...]) -> list[JudgeSpec]:
    try:
        return [parse_judge_spec(text) for text in texts]
    except JudgeError as error:
        raise ConfigError(f"grpo.{key}: {error}") from None


def _check_kinds(rows: Mapping[str, list[PromptRow]]) -> None:
    for name, split_rows in rows.items():
        key = "grpo.prompts" if name == "train" else "grpo.eval_prompts"
        bad = [row for row in split_rows if row.columns.get(KIND_COLUMN) not in KINDS]
        if bad:
            raise ConfigError(f"{key}: the refusal judge and kind-scoped judges need a "
                              f"`{KIND_COLUMN}` column (harmful | benign) on every prompt; "
                              f"line {bad[0].line} ({bad[0].id}) has "
                              f"{bad[0].columns.get(KIND_COLUMN)!r}")
