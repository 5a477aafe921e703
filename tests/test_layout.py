"""The package's dependencies point one way: `losses` needs torch only; `data` stands on neither
the engine nor the trainers; the engine stands on `data` and `losses`; `judges` stand on the
engine and `data` only; trainers and `eval` stand on the engine (and judges) and never on each
other; `loop` may use all of them; nothing imports `cli`. Checked on the source's imports."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import prefalign

PACKAGE = Path(prefalign.__file__).parent

# room -> rooms it must never import
FORBIDDEN = {
    "losses": {"data", "engine", "trainers", "eval", "cli", "config", "judges", "loop"},
    "data": {"engine", "trainers", "eval", "cli", "losses", "judges", "loop"},
    "engine": {"trainers", "eval", "cli", "judges", "loop"},
    "judges": {"trainers", "eval", "cli", "loop"},
    "trainers": {"eval", "cli", "loop"},
    "eval": {"trainers", "cli", "loop"},
    "loop": {"cli"},
}


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE)], "prefalign."))


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name.startswith("prefalign.")}


def _room(module: str) -> str:
    return module.split(".")[1]


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_imports_point_one_way(room):
    wrong = []
    for path in sorted((PACKAGE / room).rglob("*.py")):
        for name in _imported(path):
            if _room(name) in FORBIDDEN[room]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not wrong, wrong


def test_every_module_imports():
    for name in _modules():
        importlib.import_module(name)
def test_trainers_do_not_import_each_other():
    """Each trainer stands on the shared loop; the loop imports no trainer."""
    wrong = []
    for path in sorted((PACKAGE / "trainers").rglob("*.py")):
        own = path.relative_to(PACKAGE / "trainers").parts[0]
        for name in _imported(path):
            parts = name.split(".")
            allowed = ("loop",) if own == "loop" else (own, "loop")
            if len(parts) > 2 and parts[1] == "trainers" and parts[2] not in allowed:
                wrong.append(f"trainers/{path.relative_to(PACKAGE / 'trainers')} imports {name}")
    assert not wrong, wrong




def _prefalign_imports(path: Path) -> list[tuple[str, str | None]]:
    names: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prefalign"):
            names += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [(a.name, None) for a in node.names if a.name.startswith("prefalign")]
    return names


@pytest.mark.parametrize("folder", ["benchmarks", "scripts"])
def test_scripts_import_only_names_that_exist(folder):
    """Benchmarks and scripts are not imported by the tests; their imports still must resolve
    after a module moves."""
    root = PACKAGE.parents[1] / folder
    missing = []
    for path in sorted(root.glob("*.py")):
        for module, name in _prefalign_imports(path):
            imported = importlib.import_module(module)
            if name is not None and not hasattr(imported, name):
                try:
                    importlib.import_module(f"{module}.{name}")
                except ImportError:
                    missing.append(f"{path.name}: {module}.{name}")
    assert not missing, missing
