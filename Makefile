# trainstack: the two commands a newcomer needs are `make up` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
STACK  ?= dev
PULUMI ?= pulumi

# Pulumi state stays on this machine (~/.pulumi, the project's backend) unless you point it elsewhere,
# e.g. `make up PULUMI_BACKEND_URL=s3://my-bucket`.
export PULUMI_BACKEND_URL ?= file://~
# Secrets of a local stack are encrypted with a passphrase. This default is public and protects nothing:
# fine for a throwaway `dev` stack on your machine; set your own (or PULUMI_CONFIG_PASSPHRASE_FILE) for
# anything shared.
ifeq ($(origin PULUMI_CONFIG_PASSPHRASE_FILE),undefined)
export PULUMI_CONFIG_PASSPHRASE ?= trainstack-dev-not-a-secret
endif

# What `make up` runs on this machine for every stack: the Pulumi CLI, Docker (the image build; kind's and
# k3s-in-Docker's nodes), and kubectl (the stack's own readiness checks use it, and so does watching the job).
# check-prereqs adds what STACK's cluster kind needs (kind for clusterKind kind).
UP_TOOLS := pulumi docker kubectl

# `make train-local` writes here (replaced on each run).
LOCAL_RUN ?= runs/train-local

.PHONY: venv lint typecheck test up down check-prereqs train-local e2e-toolchain e2e mutation

# The virtualenv, with PyTorch first (DeepSpeed builds against the torch it finds). PyPI's torch 2.13.0 for
# Linux is the CUDA build (about 3 GB with its nvidia-* wheels); it runs on CPU too.
$(STAMP): requirements.txt requirements-dev.txt trainer/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-build-isolation -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# Every tracked shell script is checked by shellcheck (settings in .shellcheckrc).
SHELL_SCRIPTS = $(shell git ls-files '*.sh')

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@command -v shellcheck >/dev/null || { echo "lint: shellcheck is missing (Debian/Ubuntu: apt-get install shellcheck)" >&2; exit 1; }
	shellcheck -x $(SHELL_SCRIPTS)

typecheck: $(STAMP)
	$(VENV)/bin/mypy .

# The test command: lint (ruff, shellcheck), types, then every test (fast ones first, slow and docker ones last).
test: lint typecheck
	$(PY) -m pytest

# Mutation testing of the rules that protect users' work (scripts/mutation.py: modules, fast tests, budget):
# mutmut on 2 workers within MUTATION_BUDGET seconds; the survivors go to runs/mutation/report.md.
# `make mutation MODULES="webhook_patch sampling"` runs some of the modules.
MUTATION_BUDGET ?= 1800
mutation: $(STAMP)
	$(PY) scripts/mutation.py --budget $(MUTATION_BUDGET) $(MODULES)

# Every tool `make up` needs, with how to get what is missing.
check-prereqs:
	$(PYTHON) scripts/check_prereqs.py --stack $(STACK) $(UP_TOOLS)

# Bring up the `dev` stack: the cluster, GPU operator, Kubeflow Trainer, the image and the TrainJob.
# The prerequisite check comes first, so a missing tool stops it before anything is created.
up: check-prereqs
	$(MAKE) --no-print-directory venv
	$(PULUMI) login "$(PULUMI_BACKEND_URL)"
	$(PULUMI) stack select --create $(STACK)
	$(PULUMI) up --stack $(STACK)

# Tear the stack down again (the kind cluster with it).
down:
	$(PYTHON) scripts/check_prereqs.py pulumi
	$(PULUMI) login "$(PULUMI_BACKEND_URL)"
	$(PULUMI) destroy --stack $(STACK)

# Just see training work: the tiny preset on the bundled Shakespeare sample, on this CPU, no cluster.
train-local: $(STAMP)
	rm -rf $(LOCAL_RUN)
	$(PY) -m trainer train --config trainer/configs/tiny.yaml \
		--set checkpoint.dir=$(LOCAL_RUN)/checkpoints \
		--set output.dir=$(LOCAL_RUN)/output \
		--set data.cache_dir=$(LOCAL_RUN)/cache
	$(PY) -m trainer plot --metrics $(LOCAL_RUN)/output/metrics.jsonl --out $(LOCAL_RUN)/loss.png
	@echo "checkpoints: $(LOCAL_RUN)/checkpoints  metrics: $(LOCAL_RUN)/output/metrics.jsonl  loss curve: $(LOCAL_RUN)/loss.png"

# The real toolchain (Pulumi CLI and providers, the test cluster's Kubernetes and node parts, the Trainer chart
# and images, a registry), built from source snapshots and the Go module proxy into
# ${TRAINSTACK_E2E_CACHE:-~/.cache/trainstack/e2e}; `make e2e-toolchain PARTS=trainer` builds one part.
e2e-toolchain:
	bash scripts/e2e_toolchain.sh $(PARTS)

# The real end-to-end run: our own `pulumi up` -> train -> `pulumi destroy` on the test cluster, with the
# toolchain above; writes runs/e2e/report.json. `make e2e E2E_ARGS=--keep` leaves the cluster running.
e2e: $(STAMP)
	$(PY) -m tests.e2e $(E2E_ARGS)
