"""Precomputed reference caches: reused when the key matches, refused naming what differs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from prefalign.config import Config
from prefalign.data.tokenizer import CACHE_ENV
from prefalign.engine.models.load import load_model
from prefalign.trainers.dpo.data import prepare_splits
from prefalign.trainers.dpo.reference import build_precomputed
from prefalign.trainers.loop.refcache import CacheMismatchError, default_cache_path, plan_cache
from run_helpers import tiny_config
from tiny_models import tiny_model_dir


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A cache per test, so one test's default-location files never serve another's."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture
def model_dir(tmp_path, tiny_tokenizer) -> Path:
    return tiny_model_dir(tmp_path / "model", tiny_tokenizer)


def _config(tmp_path: Path, model_source: Path, cache: Path | None = None, **sections) -> Config:
    reference = {"strategy": "precomputed", "cache": str(cache) if cache else None}
    return tiny_config(tmp_path, model_source, reference=reference, **sections)


def _build(config: Config):
    loaded = load_model(config.model, config.lora)
    splits = prepare_splits(config, loaded.tokenizer)
    return build_precomputed(config, loaded, splits), loaded, splits


def test_second_build_reuses_the_default_cache_without_any_forward(tmp_path, model_dir):
    config = _config(tmp_path, model_dir)
    first, loaded, splits = _build(config)
    paths = {name: Path(info["cache"]) for name, info in first.describe()["splits"].items()}
    assert set(paths) == {"train", "eval"} and all(p.is_file() for p in paths.values())
    assert paths["train"].parent.name == "reference-logps"
    assert not any(info["reused"] for info in first.describe()["splits"].values())
    mtimes = {name: path.stat().st_mtime_ns for name, path in paths.items()}
    shutil.rmtree(model_dir)  # no reference model can be loaded now, so nothing can be scored
    second = build_precomputed(config, loaded, splits)
    assert all(info["reused"] for info in second.describe()["splits"].values())
    assert {name: path.stat().st_mtime_ns for name, path in paths.items()} == mtimes
    for name in paths:
        assert torch.equal(first.tables[name].chosen, second.tables[name].chosen)


def test_default_cache_key_ignores_paths_and_follows_the_data(tmp_path, model_dir):
    config = _config(tmp_path, model_dir)
    loaded = load_model(config.model, config.lora)
    splits = prepare_splits(config, loaded.tokenizer)
    plan = plan_cache(config, loaded, splits["train"])
    moved = shutil.copytree(model_dir, tmp_path / "moved-model")
    moved_config = _config(tmp_path / "elsewhere", moved)  # same pairs in other files
    moved_loaded = load_model(moved_config.model, moved_config.lora)
    moved_splits = prepare_splits(moved_config, moved_loaded.tokenizer)
    assert plan_cache(moved_config, moved_loaded, moved_splits["train"]).path == plan.path
    fewer = _config(tmp_path, model_dir, data={"limit_train": 20})
    fewer_splits = prepare_splits(fewer, loaded.tokenizer)
    other = plan_cache(fewer, loaded, fewer_splits["train"])
    assert other.path != plan.path and other.path == default_cache_path(other.key)
    assert other.key["data"] != plan.key["data"] and other.key["model"] == plan.key["model"]


def test_explicit_cache_is_written_then_reused(tmp_path, model_dir):
    cache = tmp_path / "refcache"
    first, _, _ = _build(_config(tmp_path, model_dir, cache))
    assert sorted(p.name for p in cache.iterdir()) == ["eval.safetensors", "train.safetensors"]
    second, _, _ = _build(_config(tmp_path, model_dir, cache))
    assert all(info["reused"] for info in second.describe()["splits"].values())
    assert torch.equal(first.tables["eval"].rejected, second.tables["eval"].rejected)


def _refusal(config: Config) -> str:
    with pytest.raises(CacheMismatchError) as error:
        _build(config)
    return str(error.value)


def test_explicit_cache_refuses_other_data_naming_it(tmp_path, model_dir):
    cache = tmp_path / "refcache"
    _build(_config(tmp_path, model_dir, cache))
    message = _refusal(_config(tmp_path, model_dir, cache, data={"limit_train": 20}))
    assert "train.safetensors: these reference log-probs were computed for a different data (" in message
    assert "model" not in message.split("(")[0]


def test_explicit_cache_refuses_another_model_naming_it(tmp_path, model_dir, tiny_tokenizer):
    cache = tmp_path / "refcache"
    _build(_config(tmp_path, model_dir, cache))
    other_model = tiny_model_dir(tmp_path / "other", tiny_tokenizer, seed=1)
    message = _refusal(_config(tmp_path, other_model, cache))
    assert "computed for a different model (model: cached" in message


def test_explicit_cache_names_dtype_and_truncation(tmp_path, model_dir):
    cache = tmp_path / "refcache"
    _build(_config(tmp_path, model_dir, cache))
    message = _refusal(_config(tmp_path, model_dir, cache, model={"dtype": "bfloat16"}))
    assert "dtype: cached \"float32\", this run \"bfloat16\"" in message
    message = _refusal(_config(tmp_path, model_dir, cache, data={"max_length": 100}))
    assert "truncation: cached" in message


def test_explicit_cache_refuses_an_unreadable_file(tmp_path, model_dir):
    cache = tmp_path / "refcache"
    cache.mkdir()
    (cache / "train.safetensors").write_bytes(b"not a safetensors file")
    message = _refusal(_config(tmp_path, model_dir, cache))
    assert "not a readable reference cache" in message


def test_works_with_a_single_process_accelerator(tmp_path, model_dir):
    from accelerate import Accelerator

    config = _config(tmp_path, model_dir)
    loaded = load_model(config.model, config.lora)
    splits = prepare_splits(config, loaded.tokenizer)
    plain = build_precomputed(config, loaded, splits)
    shutil.rmtree(Path(plain.describe()["splits"]["train"]["cache"]).parent)
    accelerated = build_precomputed(config, loaded, splits, Accelerator(cpu=True))
    assert not accelerated.describe()["splits"]["train"]["reused"]
    assert torch.equal(plain.tables["train"].chosen, accelerated.tables["train"].chosen)


def test_a_policy_precision_reference_under_autocast_has_a_cache_of_its_own(tmp_path, model_dir):
    """`reference.precision: policy` adds the autocast dtype to the key, only when autocast is on:
    a float32 cache is refused naming it; with autocast off the float32 cache is reused."""
    cache = tmp_path / "refcache"
    first, _, _ = _build(_config(tmp_path, model_dir, cache))
    assert "autocast" not in first.plans["train"].key  # caches from before the part stay valid
    policy = {"strategy": "precomputed", "cache": str(cache), "precision": "policy"}
    message = _refusal(tiny_config(tmp_path, model_dir, reference=policy,
                                   train={"autocast": "bfloat16"}))
    assert 'different autocast (autocast: cached null, this run "bfloat16")' in message
    same, _, _ = _build(tiny_config(tmp_path, model_dir, reference=policy))
    assert all(info["reused"] for info in same.describe()["splits"].values())
