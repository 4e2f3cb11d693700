# Set up a virtual environment and run the atlas or its tests.
#   make build   - set up .venv, then build the embedded default atlas into ./atlas-out (local Ray, CPU, no downloads)
#   make test    - set up .venv, then run the test suite
#   make check   - set up .venv, then lint (ruff check + ruff format --check) and type-check (mypy)
#   make view    - open ./atlas-out in the viewer on http://127.0.0.1:8501
#   make chromium - install Debian's chromium for the browser test (tests/viewer/test_browser.py also does it, as root)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Extra pip arguments for torch; see README "Choosing torch wheels" (e.g. PyTorch's CPU wheel index).
TORCH_PIP_ARGS ?=
export HF_HUB_OFFLINE ?= 1

.PHONY: setup build test check view chromium clean sae-stability

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install $(TORCH_PIP_ARGS) -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

build: setup
	$(BIN)/atlas build --out atlas-out

test: setup
	$(BIN)/python -m pytest -q

check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

view: setup
	$(BIN)/atlas view --atlas atlas-out

chromium:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The toy world's SAE against another seed and each other variant (README "Comparing SAEs"); ~12 min on 2 cores.
STABILITY := toy-saes
sae-stability: setup
	$(BIN)/atlas build --out $(STABILITY)/relu-seed0
	for v in seed1 topk batchtopk jumprelu; do \
		$(BIN)/atlas build --config jobs/configs/toy-$$v.toml --out $(STABILITY)/$$v && \
		$(BIN)/atlas diff $(STABILITY)/relu-seed0 $(STABILITY)/$$v --out $(STABILITY)/diff-$$v || exit 1; \
	done
	$(BIN)/atlas sql --atlas $(STABILITY)/diff-seed1 "SELECT kind, groups, features_a, features_b, share_a, share_b, median_cosine FROM diff_summary"

clean:
	rm -rf atlas-out
