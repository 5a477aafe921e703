"""The Python API: what `import prefalign` offers a script or a notebook.

Every trainer takes its config as a YAML path, a dict or a `Config`, with dotted overrides as a
mapping (`overrides={"optim.lr": 1e-5}`) or keyword arguments (`optim__lr=1e-5`, or
`**{"optim.lr": 1e-5}`), and its data as paths, `bundled:NAME` names, a `datasets.Dataset` or a
list of dicts (`train_data=`, `eval_data=`). In-memory data is written once to a JSONL file
under `$PREFALIGN_CACHE/inputs/`, named by its content's sha256, so the run's manifest and
fingerprints name a file that holds exactly what was trained on.

A library call leaves process-wide state alone (malloc tuning, oneDNN's kernel-cache
variables) unless asked with `tune_process=True`; the CLI asks.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefalign.atomic import atomic_open
from prefalign.config import Config, ConfigError, config_from_dict, load_config

if TYPE_CHECKING:
    from prefalign.data.audit import AuditReport
    from prefalign.data.load import LoadResult
    from prefalign.loop.rounds import LoopResult
    from prefalign.trainers.loop.loop import RunResult

ConfigLike = str | Path | Mapping[str, Any] | Config | None


def resolve_config(config: ConfigLike = None, overrides: Mapping[str, Any] | None = None,
                   **dotted: Any) -> Config:
    """A validated `Config` from a path, a dict or a Config, with dotted overrides applied in
    order (the mapping first, then keyword arguments, where `__` stands for `.`)."""
    raw = _raw_config(config)
    changes = {**dict(overrides or {}), **{k.replace("__", "."): v for k, v in dotted.items()}}
    for key, value in changes.items():
        _set_dotted(raw, key, value)
    return config_from_dict(raw, str(config) if isinstance(config, str | Path) else "config")


def train(config: ConfigLike = None, *, train_data: Any = None, eval_data: Any = None,
          resume: bool = False, tune_process: bool = False,
          overrides: Mapping[str, Any] | None = None, **dotted: Any) -> RunResult:
    """DPO (or the configured preference loss): `prefalign train` as a call."""
    from prefalign.trainers.dpo.train import train as train_dpo

    resolved = _with_data(resolve_config(config, overrides, **dotted), train_data, eval_data)
    return train_dpo(resolved, resume=resume, tune_process=tune_process)


def sft(config: ConfigLike = None, *, train_data: Any = None, eval_data: Any = None,
        resume: bool = False, tune_process: bool = False,
        overrides: Mapping[str, Any] | None = None, **dotted: Any) -> RunResult:
    """Supervised fine-tuning on conversations: `prefalign sft` as a call."""
    from prefalign.trainers.sft.train import train_sft

    resolved = _with_data(resolve_config(config, overrides, **dotted), train_data, eval_data)
    return train_sft(resolved, resume=resume, tune_process=tune_process)


def reward_model(config: ConfigLike = None, *, train_data: Any = None, eval_data: Any = None,
                 resume: bool = False, tune_process: bool = False,
                 overrides: Mapping[str, Any] | None = None, **dotted: Any) -> RunResult:
    """A Bradley–Terry reward model on preference pairs: `prefalign rm train` as a call."""
    from prefalign.trainers.rm.train import train_rm

    resolved = _with_data(resolve_config(config, overrides, **dotted), train_data, eval_data)
    return train_rm(resolved, resume=resume, tune_process=tune_process)


def grpo(config: ConfigLike = None, *, resume: bool = False, tune_process: bool = False,
         overrides: Mapping[str, Any] | None = None, **dotted: Any) -> RunResult:
    """Online RL on judged samples (GRPO, Dr. GRPO, DAPO, RLOO): `prefalign grpo` as a call;
    the prompts are `grpo.prompts` (a prompt file path)."""
    from prefalign.trainers.grpo.train import train_grpo

    return train_grpo(resolve_config(config, overrides, **dotted), resume=resume,
                      tune_process=tune_process)


def loop(config: str | Path | Mapping[str, Any], *, resume: bool = False,
         overrides: Mapping[str, Any] | None = None, on_stage: Any = None,
         progress: bool = False, tune_process: bool = False, **dotted: Any) -> LoopResult:
    """Iterative on-policy DPO: `prefalign loop -c LOOP.yaml` as a call. `config`: a loop
    config path or dict; overrides as dotted keys (`rounds`, `sampling.n`, ...);
    `on_stage(round, stage)` is called after each stage finishes. Returns the loop directory
    and the rows of its rounds.json."""
    from prefalign.loop.rounds import run_loop
    from prefalign.loop.rounds_config import load_loop_config

    changes = {**dict(overrides or {}), **{k.replace("__", "."): v for k, v in dotted.items()}}
    return run_loop(load_loop_config(config, changes), resume=resume, on_stage=on_stage,
                    progress=progress, tune_process=tune_process)


def evaluate(run_dir: str | Path, out: str | Path, **options: Any) -> dict[str, Any]:
    """`prefalign eval RUN_DIR --out OUT`: options are `EvalOptions` fields (pairs, max_pairs,
    prompt_sets, harmful, benign, ...); returns what eval.json holds."""
    from prefalign.eval.runner import EvalOptions, run_eval

    for name in ("pairs", "prompt_sets"):
        if isinstance(options.get(name), list):
            options[name] = tuple(options[name])
    return run_eval(run_dir, out, EvalOptions(**options))


def load_pairs(*sources: Any, format: str = "auto", on_error: str = "raise",
               preference_axis: str = "better", rejects: str | Path | None = None) -> LoadResult:
    """Read and validate preference pairs from paths, `bundled:` names, Datasets or lists of
    dicts; raises `DataError` listing every defect (or, with on_error="skip", leaves them out
    and writes them to `rejects`). `.pairs` holds the pairs."""
    from prefalign.data.bundled import resolve_data_path
    from prefalign.data.load import LoadOptions
    from prefalign.data.load import load_pairs as load

    paths = [resolve_data_path(s) if isinstance(s, str) else s for s in sources]
    options = LoadOptions(format, on_error, preference_axis)
    one = paths[0] if len(paths) == 1 else paths  # a list of dicts is one source
    return load(one, options, rejects_path=Path(rejects) if rejects else None)


def audit(*sources: Any, eval_sources: Sequence[Any] = (), tokenizer: str | None = None,
          max_length: int | None = None, format: str = "auto", on_error: str = "raise",
          preference_axis: str = "better") -> AuditReport:
    """`prefalign data audit` as a call, streaming every source: counts, duplicates, length
    bias (the best length-only rule's accuracy), truncation at `max_length` (token counts need
    `tokenizer`, a model name or path) and prompt leakage into `eval_sources`. `.flags` names
    what the audit raised; `.to_dict()` is its JSON."""
    from prefalign.data.audit import AuditCollector
    from prefalign.data.bundled import resolve_data_path
    from prefalign.data.fingerprint import PairFingerprint
    from prefalign.data.load import LoadOptions, stream_pairs
    from prefalign.data.tokenizer import load_tokenizer

    options = LoadOptions(format, on_error, preference_axis)

    def stream(items: Sequence[Any]) -> Any:
        paths = [resolve_data_path(s) if isinstance(s, str) else s for s in items]
        return stream_pairs(paths[0] if len(paths) == 1 else paths, options)

    collector = AuditCollector(load_tokenizer(tokenizer) if tokenizer else None)
    fingerprint = PairFingerprint({"preference_axis": options.preference_axis,
                                   "dedupe": options.dedupe})
    pairs = stream(sources)
    for pair in pairs:
        collector.add(pair)
        fingerprint.add(pair)
    heldout = stream(eval_sources) if eval_sources else None
    return collector.report(pairs.summary, fingerprint.hexdigest(), max_length=max_length,
                            eval_pairs=heldout)


def _raw_config(config: ConfigLike) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Config):
        return config.to_dict()
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))
    if isinstance(config, str | Path):
        load_config(config)  # a missing or invalid file fails here, with its own message
        import yaml

        return yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    raise ConfigError(f"config: expected a YAML path, a dict or a Config, got "
                      f"{type(config).__name__}")


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {key!r}: expected section.key (e.g. optim.lr)")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def _with_data(config: Config, train_data: Any, eval_data: Any) -> Config:
    raw = config.to_dict()
    if train_data is not None:
        raw["data"]["train"] = _sources(train_data, "train_data")
    if eval_data is not None:
        raw["data"]["eval"] = _sources(eval_data, "eval_data")
    return config_from_dict(raw) if train_data is not None or eval_data is not None else config


def _sources(data: Any, name: str) -> list[str]:
    """Paths and names as they are; a Dataset or a list of dicts written to a content-named
    JSONL file in the cache."""
    if isinstance(data, str | Path):
        return [str(data)]
    if isinstance(data, Sequence) and not data:
        return []  # no data for this split (e.g. eval_data=[]: no held-out evaluation)
    if hasattr(data, "to_list") and hasattr(data, "features"):  # a datasets.Dataset
        data = data.to_list()
    if isinstance(data, Sequence) and data and all(isinstance(d, Mapping) for d in data):
        return [str(_write_rows(list(data)))]
    if isinstance(data, Sequence) and data and all(isinstance(d, str | Path) for d in data):
        return [str(d) for d in data]
    raise ConfigError(f"{name}: expected a path, a bundled: name, a list of them, a "
                      "datasets.Dataset or a non-empty list of dicts")


def _write_rows(rows: list[Mapping[str, Any]]) -> Path:
    from prefalign.data.tokenizer import cache_root

    text = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    path = cache_root() / "inputs" / f"{digest}.jsonl"
    if not path.is_file():
        with atomic_open(path, "w") as handle:
            handle.write(text)
    return path
