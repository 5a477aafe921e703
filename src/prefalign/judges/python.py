"""`--judge module:function`: a Python callable as a judge, called the way TRL calls its reward
functions.

The function is called once for all completions as
`function(prompts=..., completions=..., **columns)`, in TRL's conversational form: `prompts[i]`
is the prompt as a list of `{"role", "content"}` messages, `completions[i]` a list holding one
assistant message, and every other column of the prompt rows (`kind`, `category`,
`prompt_id`, ...) comes as a keyword argument holding one value per completion (None where a row
lacks it). It returns one float per completion. `module` is an importable module name
(`my_rewards`, `pkg.rewards`) or a path to a `.py` file (`judges/length.py:reward`). The judge's
hash is the sha256 of the module's source file, so changing the code changes the provenance.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from prefalign.judges.base import Completions, JudgeError

RESERVED_ARGUMENTS = ("prompts", "completions")  # never overwritten by a column of that name


@dataclass(frozen=True)
class CallableJudge:
    """A user's function as a judge; see the module docstring for how it is called."""

    id: str
    hash: str
    function: Callable[..., object] = field(repr=False)

    def score(self, completions: Completions) -> object:
        return self.function(
            prompts=[[m.to_dict() for m in prompt] for prompt in completions.prompts],
            completions=[[{"role": "assistant", "content": text}] for text in completions.texts],
            **column_arguments(completions),
        )


def column_arguments(completions: Completions) -> dict[str, list[object]]:
    """Every column any row has, as one list per column (None where a row lacks it)."""
    names: dict[str, None] = {}
    for columns in completions.columns:
        names.update(dict.fromkeys(columns))
    return {name: [columns.get(name) for columns in completions.columns]
            for name in names if name not in RESERVED_ARGUMENTS}


def load_callable_judge(target: str) -> CallableJudge:
    """The judge `module:function` names; JudgeError when the module or function is missing."""
    module_name, _, function_name = target.rpartition(":")
    if not module_name or not function_name:
        raise JudgeError(f"judge {target}: expected module:function (e.g. my_rewards:length or "
                         "path/to/rewards.py:length)")
    module = _import(module_name, target)
    function = getattr(module, function_name, None)
    if not callable(function):
        found = sorted(name for name, value in vars(module).items()
                       if inspect.isfunction(value) and not name.startswith("_"))
        raise JudgeError(f"judge {target}: {module_name} has no function {function_name!r} "
                         f"(its functions: {', '.join(found) or 'none'})")
    return CallableJudge(target, _source_hash(module, target), function)


def _import(module_name: str, target: str) -> ModuleType:
    if module_name.endswith(".py"):
        return _import_file(Path(module_name), target)
    try:
        return importlib.import_module(module_name)
    except Exception as error:  # a missing module, or one that fails while importing
        raise JudgeError(f"judge {target}: cannot import {module_name!r} "
                         f"({type(error).__name__}: {error}); give an importable module name "
                         "or a path to a .py file") from error


def _import_file(path: Path, target: str) -> ModuleType:
    if not path.is_file():
        raise JudgeError(f"judge {target}: no file {path}")
    name = f"prefalign_judge_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise JudgeError(f"judge {target}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling inside the module look it up here
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise JudgeError(f"judge {target}: importing {path} raised "
                         f"{type(error).__name__}: {error}") from error
    return module


def _source_hash(module: ModuleType, target: str) -> str:
    source = getattr(module, "__file__", None)
    if source is None or not Path(source).is_file():
        raise JudgeError(f"judge {target}: module {module.__name__} has no source file to hash "
                         "(built-in and namespace modules cannot be judges)")
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()
