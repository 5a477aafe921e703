"""`prefalign eval`: score held-out pairs, generate on safety prompts, measure the cost of
alignment, and write eval.json, pairs.csv, generations.jsonl, report.html and summary.md.

Stages (each can be switched off): held-out pairs under both models; the same pairs under an
alternate prompt template; helpful-base pairs (perplexity of their chosen replies); answers to
harmful and benign prompts; both models' replies to sample conversations (`samples`, shown side by
side in the report); KL(policy ‖ reference) on responses sampled from the policy.
Both models stay in memory together (two copies of the model's weights).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from prefalign import __version__
from prefalign.data.fingerprint import fingerprint_pairs
from prefalign.data.tokenize import TruncationOptions
from prefalign.data.tokenizer import load_tokenizer
from prefalign.engine.forward.onednn import CpuMatmul, cpu_matmul
from prefalign.engine.manifest import utc_now
from prefalign.engine.models.runs import RunFiles, load_policy, load_reference, read_run
from prefalign.eval.cost import kl_estimate, perplexity_summary, response_pairs
from prefalign.eval.generate import DecodeSettings, generate
from prefalign.eval.models import reference_description
from prefalign.eval.outputs import write_outputs
from prefalign.eval.pairs import (
    PairSet,
    ScoredPairs,
    load_pair_set,
    score_pair_set,
    summarise,
    tokenize_pair_set,
)
from prefalign.eval.prompts import PromptItem, default_prompts
from prefalign.eval.safety import answer_prompts, safety_section
from prefalign.eval.samples import Sample, answer_samples, load_samples
from prefalign.eval.templates import ALTERNATE_TEMPLATES, with_template
from prefalign.losses import LOSSES, ConfiguredLoss, make_loss

HELPFUL = "bundled:hh-helpful-sample"


@dataclass(frozen=True)
class EvalOptions:
    """What `prefalign eval` measures; the defaults are the 10-minute evaluation.

    pairs: preference-pair sources (default: the run's own held-out sources).
    prompt_sets: prompt set names or files (None: every vendored set; empty: no generation).
    helpful: pairs whose chosen replies measure perplexity (None: skip).
    alternate_template: a name in ALTERNATE_TEMPLATES (None: skip the robustness check), used
    on the first `template_pairs` of the sampled held-out pairs.
    samples: preference-pair sources whose conversations both models answer (empty: skip), a
    seeded sample of `max_samples` distinct prompts, decoded as `decoding` but with up to
    `sample_max_new_tokens` new tokens (a whole reply rather than the start of an answer).
    """

    reference: str | None = None
    pairs: tuple[str, ...] = ()
    max_pairs: int | None = 200
    prompt_sets: tuple[str, ...] | None = None
    harmful: int = 100
    benign: int = 100
    decoding: DecodeSettings = field(default_factory=DecodeSettings)
    kl_prompts: int = 32
    helpful: str | None = HELPFUL
    helpful_pairs: int = 100
    alternate_template: str | None = "plain"
    template_pairs: int = 100
    samples: tuple[str, ...] = ()
    max_samples: int = 8
    sample_max_new_tokens: int = 128
    seed: int = 0
    batch_size: int = 2  # pairs per scoring forward: 2 scored 1.3x faster than 8 on 2 CPU cores
    cpu_matmul: CpuMatmul = "auto"  # as train.cpu_matmul (prefalign.engine.forward.onednn)

    def __post_init__(self) -> None:
        for name in ("max_pairs", "harmful", "benign", "kl_prompts", "helpful_pairs",
                     "template_pairs", "max_samples"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"eval: {name} must be >= 0, got {value}")
        if self.batch_size < 1:
            raise ValueError(f"eval: batch_size must be >= 1, got {self.batch_size}")
        if self.sample_max_new_tokens < 1:
            raise ValueError(f"eval: sample_max_new_tokens must be >= 1, got "
                             f"{self.sample_max_new_tokens}")
        if self.alternate_template not in (None, *ALTERNATE_TEMPLATES):
            raise ValueError(f"eval: unknown alternate template {self.alternate_template!r}; "
                             f"choose one of {', '.join(sorted(ALTERNATE_TEMPLATES))}")

    @property
    def sample_decoding(self) -> DecodeSettings:
        return replace(self.decoding, max_new_tokens=self.sample_max_new_tokens)

    @property
    def kl_decoding(self) -> DecodeSettings:
        """Sampling from the policy's own distribution: temperature 1, no top-k or top-p cut."""
        return replace(self.decoding, do_sample=True, temperature=1.0, top_p=1.0, top_k=0)


@dataclass
class _Context:
    run: RunFiles
    options: EvalOptions
    tokenizer: object
    models: dict
    loss: ConfiguredLoss
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, name: str, work: Callable[[], object]) -> object:
        start = time.perf_counter()
        value = work()
        self.timings[name] = round(time.perf_counter() - start, 2)
        return value


def run_eval(run_dir: str | Path, out_dir: str | Path, options: EvalOptions) -> dict:
    """Evaluate the run at `run_dir`; write every output under `out_dir`; return eval.json."""
    with cpu_matmul(options.cpu_matmul):
        return _run_eval(run_dir, out_dir, options)


def _run_eval(run_dir: str | Path, out_dir: str | Path, options: EvalOptions) -> dict:
    start = time.perf_counter()
    run = read_run(run_dir)
    if run.manifest.get("method") == "rm":
        raise ValueError(f"{run.run_dir}: a reward-model run, not a policy; evaluate it with "
                         "`prefalign rm eval`")
    prompts = _prompts(options)  # a bad prompt file fails before any model loads
    samples = load_samples(options.samples, options.max_samples, options.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails now, not at the end
    config = run.config.model
    tokenizer = load_tokenizer(str(run.final_dir), trust_remote_code=config.trust_remote_code)
    loss = _pair_loss(run.config.loss.name, dict(run.config.loss.params))
    context = _Context(run, options, tokenizer, {}, loss)
    context.models = context.timed("load_models", lambda: {
        "reference": load_reference(run, options.reference), "policy": load_policy(run)})
    results = _header(run, options)
    results["heldout"], scored = _heldout(context)
    rows = _safety(context, results, prompts)
    _samples(context, results, samples)
    results["cost"] = _cost(context, scored, prompts)
    results["timings"] = context.timings
    results["elapsed_seconds"] = round(time.perf_counter() - start, 1)
    write_outputs(out_dir, results, rows, run.run_dir)
    return results


def _pair_loss(name: str, params: dict) -> ConfiguredLoss:
    """The run's loss to score held-out pairs with; an unpaired loss (KTO) has no pair form, so
    its pairs are scored by DPO's implicit reward with the run's β."""
    if LOSSES[name].paired:
        return make_loss(name, **params)
    return make_loss("dpo", beta=params["beta"])


def _header(run: RunFiles, options: EvalOptions) -> dict:
    manifest = run.manifest
    code = manifest.get("environment", {}).get("code", {})
    return {
        "format": "prefalign-eval/1",
        "prefalign_version": __version__,
        "created": utc_now(),
        "run": {
            "run_dir": str(run.run_dir), "name": run.config.run.name,
            "outcome": manifest.get("outcome"), "loss": manifest["loss"]["name"],
            "loss_params": manifest["loss"].get("params", {}),
            "beta": manifest["loss"].get("params", {}).get("beta"),
            "reference_strategy": manifest.get("reference", {}).get("strategy"),
            "model_source": manifest["model"]["source"],
            "model_weight_hash": manifest["model"].get("weight_hash"),
            "chat_template_sha256": manifest.get("chat_template", {}).get("sha256"),
            "data": {split: [{"source": ", ".join(getattr(run.config.data, split)),
                              "fingerprint": info.get("fingerprint")}]
                     for split, info in manifest.get("data", {}).items()},
            "code_version": code.get("git_commit") or code.get("package"),
            "steps": manifest.get("steps"),
        },
        "models": {"reference": reference_description(run, options.reference),
                   "policy": {"source": str(run.final_dir)}},
        "settings": {
            "max_pairs": options.max_pairs, "harmful": options.harmful,
            "benign": options.benign, "seed": options.seed, "batch_size": options.batch_size,
            "cpu_matmul": options.cpu_matmul,
            "decoding": options.decoding.to_dict(),
            "kl_decoding": options.kl_decoding.to_dict(), "kl_prompts": options.kl_prompts,
            "template": "the run's chat template",
            "alternate_template": options.alternate_template,
            "template_pairs": options.template_pairs,
            "helpful": options.helpful, "helpful_pairs": options.helpful_pairs,
            "samples": list(options.samples), "max_samples": options.max_samples,
        },
    }


def _truncation(run: RunFiles) -> TruncationOptions:
    # Score every pair given: cut over-long ones as training would rather than drop them.
    data = run.config.data
    return TruncationOptions(data.max_length, data.max_prompt_length, "truncate")


def _score_both(context: _Context, data: PairSet, label: str) -> ScoredPairs:
    batch = context.options.batch_size
    logps = {name: score_pair_set(model, data, batch_size=batch, desc=f"{label} ({name})")
             for name, model in context.models.items()}
    return ScoredPairs(data, logps["reference"], logps["policy"])


def _heldout(context: _Context) -> tuple[dict | None, ScoredPairs | None]:
    options, run = context.options, context.run
    sources = options.pairs or tuple(run.config.data.eval)
    if not sources or options.max_pairs == 0:
        return None, None
    data = load_pair_set(sources, context.tokenizer, _truncation(run),
                         max_pairs=options.max_pairs, seed=options.seed)
    scored = context.timed("heldout", lambda: _score_both(context, data, "held-out pairs"))
    section = summarise(scored, context.loss)
    section["sets"] = [_set_entry(scored.data, source) for source in sources]
    if options.alternate_template is not None and options.template_pairs:
        section["template_robustness"] = context.timed(
            "template_robustness", lambda: _template_robustness(context, scored, section))
    return section, scored


def _set_entry(data: PairSet, source: str) -> dict:
    """One evaluated source: its name, how many of its pairs were scored, and the fingerprint of
    exactly those pairs (content and order, as `prefalign data` fingerprints a data set)."""
    pairs = [pair for pair, name in zip(data.pairs, data.sources, strict=True) if name == source]
    return {"name": source, "pairs": len(pairs), "fingerprint": fingerprint_pairs(pairs)}


def _template_robustness(context: _Context, scored: ScoredPairs, heldout: dict) -> dict:
    """Reward accuracy of the first `template_pairs` held-out pairs (a seeded sample already)
    written with an alternate prompt template, beside their accuracy under the run's own."""
    options, run = context.options, context.run
    name = options.alternate_template
    count = min(options.template_pairs, len(scored.data))
    data = tokenize_pair_set(scored.data.pairs[:count], scored.data.sources[:count],
                             with_template(context.tokenizer, name), _truncation(run))
    alternate = _score_both(context, data, f"{name} template")
    overall = summarise(alternate, context.loss)["overall"]
    keys = ("accuracy", "length_only_accuracy", "length_balanced_accuracy",
            "length_balanced_accuracy_low", "length_balanced_accuracy_high", "policy_margin",
            "reference_margin")
    default = heldout["per_pair"]["correct"][:count]
    return {"template": name, "description": ALTERNATE_TEMPLATES[name][1], "n": overall["n"],
            **{key: overall.get(key) for key in keys},
            "default_accuracy": sum(default) / len(default) if default else None}


def _prompts(options: EvalOptions) -> list[PromptItem]:
    if options.prompt_sets is not None and not options.prompt_sets:
        return []
    return default_prompts(options.harmful, options.benign, options.seed, options.prompt_sets)


def _safety(context: _Context, results: dict, prompts: list[PromptItem]) -> list[dict]:
    if not prompts:
        return []
    rows = context.timed("generation", lambda: answer_prompts(
        context.models, context.tokenizer, prompts, context.options.decoding))
    results["generation"] = safety_section(rows, prompts)
    return rows


def _samples(context: _Context, results: dict, samples: list[Sample]) -> None:
    if samples:
        results["samples"] = context.timed("samples", lambda: answer_samples(
            context.models, context.tokenizer, samples, context.options.sample_decoding))


def _cost(context: _Context, scored: ScoredPairs | None, prompts: list[PromptItem]) -> dict:
    perplexities = {}
    if scored is not None:
        perplexities["heldout_chosen"] = perplexity_summary(
            scored.reference.chosen, scored.policy.chosen, scored.policy.chosen_count)
    if context.options.helpful and context.options.helpful_pairs:
        perplexities["helpful"] = context.timed("helpful", lambda: _helpful(context))
    cost: dict = {"perplexity": perplexities}
    if prompts and context.options.kl_prompts:
        cost["kl"] = context.timed("kl", lambda: _kl(context, prompts))
    return cost


def _helpful(context: _Context) -> dict:
    options, run = context.options, context.run
    data = load_pair_set([options.helpful], context.tokenizer, _truncation(run),
                         max_pairs=options.helpful_pairs, seed=options.seed)
    scored = _score_both(context, data, "helpful pairs")
    summary = perplexity_summary(scored.reference.chosen, scored.policy.chosen,
                                 scored.policy.chosen_count)
    metrics = summarise(scored, context.loss)["overall"]
    return {**summary, "source": f"{options.helpful} (hh-rlhf helpful-base test, chosen replies)",
            "accuracy": metrics.get("accuracy"), "policy_margin": metrics.get("policy_margin"),
            "reference_margin": metrics.get("reference_margin")}


def _kl(context: _Context, prompts: list[PromptItem]) -> dict:
    """Sample from the policy on a seeded, kind-balanced subset of the prompts; score both."""
    options = context.options
    subset = _spread(prompts, options.kl_prompts)
    settings = options.kl_decoding
    samples = generate(context.models["policy"], context.tokenizer,
                       [item.messages for item in subset], settings, desc="KL samples")
    samples = [s for s in samples if s.response_ids]
    data = PairSet([], response_pairs([s.prompt_ids for s in samples],
                                      [s.response_ids for s in samples]), [])
    logps = {name: score_pair_set(model, data, batch_size=options.batch_size)
             for name, model in context.models.items()}
    estimate = kl_estimate(logps["policy"].chosen, logps["reference"].chosen,
                           logps["policy"].chosen_count)
    return {**estimate, "decoding": settings.to_dict(),
            "note": "KL(policy||reference) = E_{y~policy}[log p(y|x) - log ref(y|x)], summed "
                    "over each sampled response's tokens"}


def _spread(prompts: list[PromptItem], count: int) -> list[PromptItem]:
    """`count` prompts taken at even steps through the list (harmful then benign)."""
    if count >= len(prompts):
        return list(prompts)
    step = len(prompts) / count
    return [prompts[int(i * step)] for i in range(count)]

