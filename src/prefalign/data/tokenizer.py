"""Load a tokenizer from a model source, caching GGUF conversions, and describe it for manifests.

Converting a GGUF tokenizer takes seconds (SmolLM2: ~7-10 s), so the converted tokenizer is saved
with `save_pretrained` under the prefalign cache and loaded from there next time (well under a
second). The cache key covers the GGUF path, size and mtime and the transformers version, so a
changed file or library never serves a stale conversion.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from prefalign.sources import DEFAULT_MODEL, ModelSource, resolve_model_source

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

CACHE_ENV = "PREFALIGN_CACHE"
# Set on tokenizers whose pad token was missing and now reuses eos; reported by tokenizer_identity.
PAD_FROM_EOS_ATTR = "prefalign_pad_from_eos"
# Names transformers gives its generic fast tokenizer class (v5 renamed it).
_GENERIC_FAST_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


class TokenizerError(ValueError):
    """A tokenizer that prefalign cannot use as is (no chat template, no pad or eos token)."""


def cache_root() -> Path:
    """`$PREFALIGN_CACHE` when set, else `~/.cache/prefalign`."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "prefalign"


def load_tokenizer(
    name_or_path: str | Path = DEFAULT_MODEL,
    *,
    trust_remote_code: bool = False,
    cache_dir: str | Path | None = None,
) -> PreTrainedTokenizerBase:
    """A fast tokenizer with a pad token and a chat template, from an alias, GGUF file or directory.

    cache_dir: where converted GGUF tokenizers live (default `cache_root() / "tokenizers"`).
    Raises ModelSourceError for unknown names and TokenizerError for unusable tokenizers.
    """
    source = resolve_model_source(str(name_or_path))
    if source.gguf_file is not None:
        tokenizer = _load_gguf_cached(source, _tokenizer_cache_dir(cache_dir), trust_remote_code)
    else:
        tokenizer = _from_pretrained(source.path, trust_remote_code, **source.pretrained_kwargs())
    tokenizer.name_or_path = source.display_name
    _ensure_pad_token(tokenizer)
    _ensure_chat_template(tokenizer)
    return tokenizer


def _tokenizer_cache_dir(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "tokenizers"


def _from_pretrained(
    path: Path, trust_remote_code: bool, **kwargs: object
) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, **kwargs)


def gguf_cache_key(gguf_path: Path) -> str:
    """sha256 of (resolved path, size, mtime_ns, transformers version)."""
    stat = gguf_path.stat()
    version = importlib.metadata.version("transformers")
    identity = f"{gguf_path.resolve()}\n{stat.st_size}\n{stat.st_mtime_ns}\n{version}"
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()


def _load_gguf_cached(
    source: ModelSource, cache_dir: Path, trust_remote_code: bool
) -> PreTrainedTokenizerBase:
    assert source.gguf_path is not None
    cached = cache_dir / gguf_cache_key(source.gguf_path)
    if (cached / "tokenizer_config.json").is_file():
        try:
            return _load_cached(cached, trust_remote_code)
        except Exception as error:  # a damaged cache entry is rebuilt, not fatal
            logger.warning("ignoring unreadable tokenizer cache %s: %s", cached, error)
            shutil.rmtree(cached, ignore_errors=True)
    tokenizer = _from_pretrained(source.path, trust_remote_code, **source.pretrained_kwargs())
    _save_atomically(tokenizer, cached)
    return tokenizer


def _load_cached(cached: Path, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    """Load a cached conversion; the generic fast class when that is what was saved.

    AutoTokenizer imports torch (over a second); the generic class does not, and a GGUF
    conversion is saved as exactly that class, so the cached load stays well under a second.
    """
    config = json.loads((cached / "tokenizer_config.json").read_text(encoding="utf-8"))
    if config.get("tokenizer_class") in _GENERIC_FAST_CLASSES:
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(cached), local_files_only=True)
    return _from_pretrained(cached, trust_remote_code, local_files_only=True)


def _save_atomically(tokenizer: PreTrainedTokenizerBase, target: Path) -> None:
    """save_pretrained into a temp dir beside target, then rename it into place.

    Readers only ever see a complete directory. A concurrent writer that loses the race leaves
    the winner's (identical) entry in place; a cache that cannot be written only costs speed.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as error:
        logger.warning("cannot write tokenizer cache under %s: %s", target.parent, error)
        return
    try:
        tokenizer.save_pretrained(str(staging))
        os.rename(staging, target)
    except OSError:
        if not (target / "tokenizer_config.json").is_file():
            logger.warning("could not store the tokenizer cache at %s", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    if tokenizer.pad_token is not None:
        setattr(tokenizer, PAD_FROM_EOS_ATTR, False)
        return
    if tokenizer.eos_token is None:
        raise TokenizerError(
            f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an eos token; "
            f"set tokenizer.pad_token before using it"
        )
    # Padding positions are masked out of attention and labels, so reusing eos is safe.
    tokenizer.pad_token = tokenizer.eos_token
    setattr(tokenizer, PAD_FROM_EOS_ATTR, True)


def _ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise TokenizerError(
            f"tokenizer {tokenizer.name_or_path!r} has no chat template; pass a tokenizer that "
            f"has one (an instruct/chat model) or set tokenizer.chat_template yourself"
        )


def tokenizer_identity(tokenizer: PreTrainedTokenizerBase) -> dict[str, object]:
    """What identifies a tokenizer in fingerprints and run manifests (JSON-serialisable)."""
    template = tokenizer.chat_template or ""
    if isinstance(template, dict):  # some tokenizers carry several named templates
        template = "\n".join(f"{k}\n{v}" for k, v in sorted(template.items()))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return {
        "name_or_path": str(tokenizer.name_or_path),
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "chat_template_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest(),
        "tokenizer_sha256": (
            hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest() if backend else None
        ),
        "special_tokens": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "pad_token_from_eos": bool(getattr(tokenizer, PAD_FROM_EOS_ATTR, False)),
    }
