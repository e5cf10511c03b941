# The two set-up commands of the README, for a fresh Debian 12 machine as root:
#   make demo   installs everything, then runs the example pipeline
#   make test   installs what the tests need, then runs the whole suite
# Both are idempotent: stamps under .stamps/ remember what is done, and are
# invalidated by the files that describe it.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
DEVDEP := $(BIN)/devdep-cli
# Two cores: one pytest worker per core would starve the VMs the tests boot.
PYTEST_ARGS ?=
LINTED := $(wildcard src tests bench scripts)

.PHONY: test demo lint typecheck unit integration clean images

$(STAMPS):
	mkdir -p $@

$(STAMPS)/debian: scripts/debian-packages.txt scripts/install-debian-packages | $(STAMPS)
	scripts/install-debian-packages scripts/debian-packages.txt
	touch $@

$(STAMPS)/venv: pyproject.toml $(STAMPS)/debian
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable '.[test]'
	touch $@

lint: $(STAMPS)/venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

# The guest kernel and initramfs, the agent runtime disk and the default image,
# in the image store. Each command does nothing when its part is up to date
# (and the agent disk is rebuilt when devdep.guest changes), so this runs
# every time rather than behind a stamp.
images: $(STAMPS)/venv
	$(DEVDEP) image kernel
	$(DEVDEP) image agent
	$(DEVDEP) image build-base

typecheck: $(STAMPS)/venv
	$(BIN)/mypy

unit: $(STAMPS)/venv
	$(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

integration: $(STAMPS)/venv images
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

test: lint typecheck images
	$(BIN)/pytest $(PYTEST_ARGS)

# The example pipeline in a fresh micro-VM: it prints the guest's kernel and
# shows that the guest cannot write to its root filesystem.
demo: $(STAMPS)/venv images
	cd examples/hello && ../../$(DEVDEP) validate --file devdep.yaml
	cd examples/hello && ../../$(DEVDEP) deploy --local --env=demo --file devdep.yaml

clean:
	rm -rf $(STAMPS) $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
