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

.PHONY: venv stack-venv trainer-venv check lint typecheck test up down kubeconfig logs check-prereqs train-local e2e-toolchain e2e mutation

# One virtualenv (.venv, the one Pulumi.yaml names), filled in layers so each target installs only what it uses:
#   stack   requirements.txt: what `pulumi up` runs (make up, make down, make check): about 160 MB, under a minute
#   trainer + torch and trainer/requirements.txt: what training on this machine needs (make train-local)
#   dev     + requirements-dev.txt: tests, linters, mutation testing (make test, make e2e, make mutation)
# PyPI's torch 2.13.0 for Linux is the CUDA build (about 3 GB with its nvidia-* wheels); it runs on CPU too.
# torch comes before the trainer's requirements, since DeepSpeed builds against the torch it finds.
# The Python is checked first (scripts/python_check.py, which any Python parses): one line, before anything is
# downloaded.
STACK_STAMP   := $(VENV)/.stack-installed
TRAINER_STAMP := $(VENV)/.trainer-installed

$(STACK_STAMP): requirements.txt
	$(PYTHON) scripts/python_check.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $(STACK_STAMP)

$(TRAINER_STAMP): $(STACK_STAMP) trainer/requirements.txt
	$(PY) -m pip install -q --upgrade setuptools wheel
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-build-isolation -r trainer/requirements.txt
	touch $(TRAINER_STAMP)

$(STAMP): $(TRAINER_STAMP) requirements-dev.txt
	$(PY) -m pip install -q --no-build-isolation -r requirements-dev.txt
	touch $(STAMP)

stack-venv: $(STACK_STAMP)
trainer-venv: $(TRAINER_STAMP)
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
	$(PYTHON) scripts/python_check.py
	$(PYTHON) scripts/check_prereqs.py --stack $(STACK) python $(UP_TOOLS)

# Check Pulumi.$(STACK).yaml with Pulumi.yaml's defaults, without the Pulumi CLI or a cluster: every problem one
# line (exit 2), or ok and the plan (cluster, nodes x GPUs, what will be installed).
check: $(STACK_STAMP)
	$(PY) scripts/check_stack.py $(STACK)

# Bring up the `dev` stack: the cluster, GPU operator, Kubeflow Trainer, the image and the TrainJob.
# The prerequisite check comes first, so a missing tool stops it before anything is created.
up: check-prereqs
	$(MAKE) --no-print-directory stack-venv
	$(PULUMI) login "$(PULUMI_BACKEND_URL)"
	$(PULUMI) stack select --create $(STACK)
	$(PULUMI) up --stack $(STACK)

# Tear the stack down again (the kind cluster with it). destroy runs what up ran (the stack's readiness and
# teardown scripts: docker, kubectl, and kind for a kind stack), so the same check comes first.
down: check-prereqs
	$(MAKE) --no-print-directory stack-venv
	$(PULUMI) login "$(PULUMI_BACKEND_URL)"
	$(PULUMI) destroy --stack $(STACK)

# The stack's kubeconfig output (a secret: read with the passphrase above, as `make up` had it) written to
# KUBECONFIG_FILE, readable by you only (it holds the cluster's credentials); then export KUBECONFIG.
KUBECONFIG_FILE ?= $(HOME)/.kube/trainstack-$(STACK)
kubeconfig:
	mkdir -p "$(dir $(KUBECONFIG_FILE))"
	umask 077 && $(PULUMI) stack output kubeconfig --show-secrets --stack $(STACK) > "$(KUBECONFIG_FILE).tmp" \
		&& mv -f "$(KUBECONFIG_FILE).tmp" "$(KUBECONFIG_FILE)" || { rm -f "$(KUBECONFIG_FILE).tmp"; exit 1; }
	@echo "export KUBECONFIG=$(KUBECONFIG_FILE)"

# Follow every pod's log: the stack's logsCommand (bash: it reads the kubeconfig secret with the passphrase).
logs:
	command="$$($(PULUMI) stack output logsCommand --stack $(STACK))" && bash -c "$$command"

# Just see training work: the tiny preset on the bundled Shakespeare sample, on this CPU, no cluster.
train-local: $(TRAINER_STAMP)
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
