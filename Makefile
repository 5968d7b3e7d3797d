# Two commands: `make train` (the blog's run) and `make test`. Each installs what it needs
# into .venv first (once; again when pyproject.toml changes). `make test-fast`: the lesson's
# maths alone, in seconds, for whoever changes config, data, model, losses or train.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/vae_2
ARGS ?=
# pytest-xdist processes for `make test`, each taking the next test as it frees up (0: no workers)
TEST_WORKERS ?= 2

.PHONY: train test test-fast bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PY) -m pip install -q -e ".[dev,torch]"
	touch $@

train: $(VENV)/.base
	$(PY) -m vae_jax train --workdir "$(WORKDIR)" $(ARGS)

test: $(VENV)/.dev
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(ARGS)

test-fast: $(VENV)/.dev
	$(PY) -m pytest -q -m fast $(ARGS)

bench: $(VENV)/.dev
	$(PY) -m vae_jax bench $(ARGS)

clean:
	rm -rf $(VENV) runs
