"""Loading tokenizers from GGUF files (with the conversion cache) and directories."""

from __future__ import annotations

import json
import logging
import os

import pytest

from prefalign.data.template import render_prompt
from prefalign.data.tokenizer import (
    PAD_FROM_EOS_ATTR,
    TokenizerError,
    _save_atomically,
    cache_root,
    gguf_cache_key,
    load_tokenizer,
    tokenizer_identity,
)
from prefalign.sources import ModelSourceError
from tiny import TINY_CHAT_TEMPLATE, build_tiny_tokenizer, write_tiny_gguf


@pytest.fixture
def tiny_gguf(tmp_path):
    return write_tiny_gguf(tmp_path / "tiny.gguf")


def test_gguf_tokenizer_matches_the_tokenizer_it_was_written_from(tiny_gguf, tmp_path):
    loaded = load_tokenizer(tiny_gguf, cache_dir=tmp_path / "cache")
    reference = build_tiny_tokenizer()
    text = "Hello! You are a helpful assistant.\n\n  x <|im_end|>"
    assert (
        loaded(text, add_special_tokens=False)["input_ids"]
        == reference(text, add_special_tokens=False)["input_ids"]
    )
    assert loaded.chat_template == TINY_CHAT_TEMPLATE
    assert loaded.name_or_path == str(tiny_gguf.resolve())


def test_second_load_comes_from_the_cache_directory(tiny_gguf, tmp_path):
    cache = tmp_path / "cache"
    load_tokenizer(tiny_gguf, cache_dir=cache)
    entry = cache / gguf_cache_key(tiny_gguf)
    assert sorted(p.name for p in cache.iterdir()) == [entry.name]  # no temp dirs left behind
    # Only a load from the cache can see this edit of the cached template.
    template_file = entry / "chat_template.jinja"
    template_file.write_text("{# from-cache #}" + template_file.read_text())
    again = load_tokenizer(tiny_gguf, cache_dir=cache)
    assert again.chat_template.startswith("{# from-cache #}")


def test_cache_writer_that_loses_the_race_leaves_the_winner_in_place(tmp_path, caplog):
    target = tmp_path / "cache" / "key"
    winner = build_tiny_tokenizer()
    winner.save_pretrained(target)
    before = sorted(p.name for p in target.iterdir())
    with caplog.at_level(logging.WARNING, logger="prefalign.data.tokenizer"):
        _save_atomically(build_tiny_tokenizer(TINY_CHAT_TEMPLATE + "{# loser #}"), target)
    assert caplog.text == ""
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["key"]  # no staging left
    assert sorted(p.name for p in target.iterdir()) == before
    assert "loser" not in (target / "chat_template.jinja").read_text()


def test_cache_key_changes_with_the_file(tiny_gguf):
    before = gguf_cache_key(tiny_gguf)
    stat = tiny_gguf.stat()
    os.utime(tiny_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert gguf_cache_key(tiny_gguf) != before


def test_unreadable_cache_entry_is_rebuilt(tiny_gguf, tmp_path, caplog):
    cache = tmp_path / "cache"
    entry = cache / gguf_cache_key(tiny_gguf)
    entry.mkdir(parents=True)
    (entry / "tokenizer_config.json").write_text("{ not json")
    with caplog.at_level(logging.WARNING, logger="prefalign.data.tokenizer"):
        tokenizer = load_tokenizer(tiny_gguf, cache_dir=cache)
    assert "ignoring unreadable tokenizer cache" in caplog.text
    assert tokenizer.chat_template == TINY_CHAT_TEMPLATE
    assert json.loads((entry / "tokenizer_config.json").read_text())["eos_token"] == "<|im_end|>"


def test_default_cache_is_under_prefalign_cache_env(prefalign_cache, tiny_gguf):
    assert cache_root() == prefalign_cache
    load_tokenizer(tiny_gguf)
    assert (prefalign_cache / "tokenizers" / gguf_cache_key(tiny_gguf)).is_dir()


def _saved_tiny(directory, *, chat_template=TINY_CHAT_TEMPLATE, pad=True):
    build_tiny_tokenizer(chat_template).save_pretrained(directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    if not pad:
        config.pop("pad_token", None)
    config_path.write_text(json.dumps(config))
    return directory


def test_directory_source_loads_as_is(tmp_path):
    tokenizer = load_tokenizer(_saved_tiny(tmp_path))
    assert tokenizer.pad_token == "<|pad|>"
    assert not getattr(tokenizer, PAD_FROM_EOS_ATTR)
    assert render_prompt(tokenizer, [{"role": "user", "content": "hi"}]).endswith(
        "<|im_start|>assistant\n"
    )


def test_missing_pad_token_falls_back_to_eos_and_is_recorded(tmp_path):
    tokenizer = load_tokenizer(_saved_tiny(tmp_path, pad=False))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert tokenizer_identity(tokenizer)["pad_token_from_eos"] is True


def test_tokenizer_without_chat_template_is_refused_by_name(tmp_path):
    _saved_tiny(tmp_path, chat_template=None)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(TokenizerError, match=rf"{tmp_path.name}.*has no chat template; pass a"):
        load_tokenizer(tmp_path)


def test_unknown_name_is_refused_before_any_loading():
    with pytest.raises(ModelSourceError, match="never downloads"):
        load_tokenizer("gpt2")


def test_identity_is_stable_and_tracks_the_template(tiny_tokenizer):
    identity = tokenizer_identity(tiny_tokenizer)
    assert identity == tokenizer_identity(build_tiny_tokenizer())
    assert identity["vocab_size"] == len(tiny_tokenizer)
    assert identity["special_tokens"]["eos_token"] == "<|im_end|>"
    assert set(identity) == {
        "name_or_path",
        "class",
        "vocab_size",
        "chat_template_sha256",
        "tokenizer_sha256",
        "special_tokens",
        "pad_token_from_eos",
    }
    other = tokenizer_identity(build_tiny_tokenizer(TINY_CHAT_TEMPLATE + " "))
    assert other["chat_template_sha256"] != identity["chat_template_sha256"]
    assert other["tokenizer_sha256"] == identity["tokenizer_sha256"]
    json.dumps(identity)  # manifests store it as JSON


@pytest.mark.slow
def test_smollm2_tokenizer_has_chatml_template_and_pad(smollm2_tokenizer):
    assert smollm2_tokenizer.name_or_path == "smollm2-135m-instruct"
    assert "<|im_start|>" in smollm2_tokenizer.chat_template
    assert smollm2_tokenizer.pad_token is not None
    assert tokenizer_identity(smollm2_tokenizer)["vocab_size"] == 49152
