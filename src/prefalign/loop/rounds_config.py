"""`prefalign loop`'s config: K rounds of generate → judge → build pairs → DPO → evaluate.

Typed and frozen like a run's config (prefalign.config): YAML keys map 1:1 to fields, unknown
keys are errors naming the closest valid one, and everything — the judge specs, the pair
settings, every round's train config, the eval settings — is checked before any model loads.
Each field's default is here; docs/loop.md lists them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from prefalign.config import (
    Config,
    ConfigError,
    apply_override,
    build_dataclass,
    config_from_dict,
    plain_data,
    read_yaml_mapping,
)
from prefalign.engine.sampling.settings import DecodeSettings
from prefalign.eval.runner import EvalOptions
from prefalign.judges.base import JudgeError
from prefalign.judges.combine import check_combine
from prefalign.judges.spec import parse_judge_spec
from prefalign.loop.pairs import BuildOptions

DEFAULT_ROWS = 64  # sequences decoded together by default, as `prefalign generate`
RUN = "run"  # a round's DPO run directory: LOOPDIR/round-R/run


@dataclass(frozen=True)
class SamplingSection:
    """Round R samples `n` responses per prompt from its policy, seeded by seed + R − 1 (each
    round draws fresh samples; the same config draws the same ones). batch_size: prompts
    decoded together (null: 64 // n); speed only, never the samples."""

    n: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
    seed: int = 0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ConfigError(f"sampling.n: a pair needs two samples of a prompt; give n >= 2, "
                              f"got {self.n}")
        try:
            self.settings(1)
        except ValueError as error:
            raise ConfigError(f"sampling.{str(error).removeprefix('decoding.')}") from None

    def settings(self, round_: int) -> DecodeSettings:
        """The decoding settings of round `round_` (1-based)."""
        return DecodeSettings(do_sample=True, temperature=self.temperature, top_p=self.top_p,
                              top_k=self.top_k, max_new_tokens=self.max_new_tokens,
                              seed=self.seed + round_ - 1, num_samples=self.n,
                              batch_size=self.batch_size or max(1, DEFAULT_ROWS // self.n))


@dataclass(frozen=True)
class PairsSection:
    """The judges and the pair building of `prefalign pairs build`: judges are `--judge`
    specs (`KIND[:TARGET][@WEIGHT]`); combine, safety_judge and threshold as --combine,
    --safety-judge and --threshold; strategy best-worst | best-random; min_margin, seed as
    --min-margin and --seed."""

    judges: tuple[str, ...] = ("refusal",)
    combine: Literal["sum", "piecewise"] = "sum"
    safety_judge: str | None = None
    threshold: float | None = None
    strategy: Literal["best-worst", "best-random"] = "best-worst"
    min_margin: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            specs = [parse_judge_spec(text) for text in self.judges]
            safety = parse_judge_spec(self.safety_judge) if self.safety_judge else None
            check_combine(self.combine, [spec.id for spec in specs],
                          safety.id if safety is not None else None, self.threshold)
            self.options(1)
        except (JudgeError, ValueError) as error:
            raise ConfigError(f"pairs: {error}") from None

    def options(self, round_: int) -> BuildOptions:
        return BuildOptions(strategy=self.strategy, min_margin=self.min_margin, seed=self.seed,
                            round=round_)


@dataclass(frozen=True)
class TrainSettings:
    """Every round's DPO run: the train config file `config` (null: the defaults) with the
    sections of `settings` merged over it, key by key. The loop sets, per round, run.name and
    run.output_dir (LOOPDIR/round-R/run), model.source (round 1: the loop's model; later: the
    previous round's final/), data.train (the round's pairs) and reference.source."""

    config: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoopConfig:
    """A whole loop; its directory is output_dir/name. model: round 1's policy and the model
    every round is evaluated against (null: the train config's model.source). reference:
    each round's DPO reference, `previous` (the policy the round starts from) or `original`
    (the loop's model). prompts: prompt files or bundled: names (kind columns for the refusal
    judge), merged into LOOPDIR/prompts.jsonl. eval: `prefalign eval`'s options (EvalOptions;
    null: no evaluation); eval.reference null means the loop's model."""

    name: str = "loop"
    output_dir: str = "runs"
    rounds: int = 2
    model: str | None = None
    reference: Literal["previous", "original"] = "previous"
    prompts: tuple[str, ...] = ()
    sampling: SamplingSection = field(default_factory=SamplingSection)
    pairs: PairsSection = field(default_factory=PairsSection)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalOptions | None = field(default_factory=EvalOptions)

    @property
    def loop_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return plain_data(asdict(self))


def load_loop_config(source: str | Path | Mapping[str, Any] | None,
                     overrides: Sequence[str] | Mapping[str, Any] = ()) -> LoopConfig:
    """The loop config from a YAML path or a dict, with `key=value` overrides (`rounds=1`,
    `sampling.n=8`, `train.settings.optim.lr=1e-5`) or a {dotted key: value} mapping;
    validated, every round's train config included."""
    if isinstance(source, Mapping):
        raw, where = copy.deepcopy(dict(source)), "loop config"
    else:
        raw = read_yaml_mapping(source) if source is not None else {}
        where = str(source) if source is not None else "loop config"
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            _set_dotted(raw, key, value)
    else:
        for item in overrides:
            _apply_item(raw, item)
    config = build_dataclass(LoopConfig, raw, where)
    try:
        check_loop_config(config)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    return config


def _apply_item(raw: dict[str, Any], item: str) -> None:
    """`key=value` from the command line, the value parsed as YAML."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: write it as key=value, e.g. rounds=1 or "
                          "sampling.n=8")
    if "." in key:
        apply_override(raw, item)
    else:
        raw[key.strip()] = yaml.safe_load(value) if value.strip() else None


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part} is not a mapping")
    node[last] = value


def check_loop_config(config: LoopConfig) -> None:
    """Checks across sections; every round's train config is built (and so validated)."""
    if config.rounds < 1:
        raise ConfigError(f"rounds: must be >= 1, got {config.rounds}")
    if not config.prompts:
        raise ConfigError("prompts: name at least one prompt file (JSONL rows with a `prompt`, "
                          "and a `kind` column for the refusal judge) or a bundled: name")
    base = base_train_config(config)
    if base.loss.name == "kto":
        raise ConfigError("train: the loop builds preference pairs; kto takes unpaired examples")
    if base.model.adapter is not None:
        raise ConfigError("train.settings.model.adapter: each round starts from the previous "
                          "round's whole model; remove model.adapter")
    if base.lora.enabled and not base.lora.merge_on_save and config.rounds > 1:
        raise ConfigError("train.settings.lora.merge_on_save: with LoRA, set it to true so that "
                          "a round's final/ is a whole model the next round starts from")
    if config.reference == "original" and config.rounds > 1 \
            and base.reference.strategy != "frozen_copy":
        raise ConfigError(f"reference: original holds the loop's model as the reference of "
                          f"later rounds; set train.settings.reference.strategy: frozen_copy "
                          f"(got {base.reference.strategy})")
    for round_ in range(1, config.rounds + 1):
        round_train_config(config, round_)


def base_train_config(config: LoopConfig) -> Config:
    """The train config file with `train.settings` merged over it, before the loop's keys."""
    raw = read_yaml_mapping(config.train.config) if config.train.config is not None else {}
    where = config.train.config or "train.settings"
    return config_from_dict(_merge(raw, config.train.settings), where)


def original_model(config: LoopConfig) -> str:
    return config.model or base_train_config(config).model.source


def round_dir(config: LoopConfig, round_: int) -> Path:
    return config.loop_dir / f"round-{round_}"


def round_train_config(config: LoopConfig, round_: int) -> Config:
    """Round `round_`'s DPO config: the base with the loop's keys (TrainSettings) set."""
    base = base_train_config(config)
    here = round_dir(config, round_)
    start = original_model(config) if round_ == 1 else \
        str(round_dir(config, round_ - 1) / RUN / "final")
    reference = original_model(config) if config.reference == "original" and round_ > 1 \
        else None
    raw = base.to_dict()
    raw["run"].update(name=RUN, output_dir=str(here))
    raw["model"]["source"] = start
    raw["data"]["train"] = [str(here / "pairs.jsonl")]
    raw["reference"]["source"] = reference
    return config_from_dict(raw, f"round {round_}'s train config")


def _merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
