# The trainer image: `python -m trainer ...` on a CUDA PyTorch base, or on a plain Python base with PyTorch's
# CPU wheels (what a stack with gpusPerNode 0 builds: components/trainer_image.py CPU_BUILD_ARGS).
# Layers go from rarely to often changed, so a code-only change rebuilds only the last one, and the heavy ones
# (base, torch, requirements) are the same for every stack that builds this Dockerfile with the same arguments.
#
#   docker build -t trainstack-trainer .                                  # production (CUDA base, gpt2 baked in)
#   docker build --build-arg BASE_IMAGE=python:3.12-slim-bookworm \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .  # CPU only (about 1 GB, not 8)
#   docker build --build-arg BAKE_TOKENIZER=0 --build-arg BASE_IMAGE=... .  # offline: no tokenizer download

# Pinned: torch 2.11.0, CUDA 12.8, cuDNN 9 (DeepSpeed 0.19 wants torch >= 2.6 or so). The runtime images
# ship gcc since torch 2.10 (pytorch/pytorch#170235), which torch.compile needs. Any override must put a
# `python` with torch and pip on PATH.
ARG BASE_IMAGE=pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

# 1 = download the production `gpt2` encoding now, so pods never fetch it; 0 for builds with no route to it.
ARG BAKE_TOKENIZER=1
# Empty: the base has torch (the default). Set: torch==TORCH_VERSION (the CUDA base's) from this index, first.
ARG TORCH_INDEX_URL=""
ARG TORCH_VERSION=2.11.0

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DS_BUILD_OPS=0 \
    TIKTOKEN_CACHE_DIR=/opt/tiktoken

# The pods run as uid 1000 (fsGroup 1000). Ubuntu 24.04 based images already have a uid 1000 user
# ("ubuntu"); it is replaced so the uid has one name. /app/runs is the presets' default output place.
RUN set -eu; \
    existing="$(getent passwd 1000 | cut -d: -f1 || true)"; \
    if [ -n "$existing" ]; then userdel --remove "$existing"; fi; \
    groupadd --gid 1000 trainer; \
    useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash trainer; \
    install -d -o trainer -g trainer /app/runs

WORKDIR /app

# A base without torch (the CPU build): torch from TORCH_INDEX_URL, and the build tools DeepSpeed's sdist needs
# under --no-build-isolation (Python 3.12 images ship pip only).
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        python -m pip install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION" \
        && python -m pip install setuptools wheel; \
    fi

# torch.compile (train.compile, on in the GPU preset) has Triton build small host-side launchers with a C
# compiler when a run starts. The default base has one; an older or slimmer base with a CUDA torch gets gcc
# here (a CPU-only torch does not: the CPU presets do not compile; a CPU stack that does names a base with cc).
RUN if ! command -v cc >/dev/null 2>&1 \
        && python -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)"; then \
        apt-get update \
        && apt-get install -y --no-install-recommends gcc libc6-dev \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# Dependencies before code. --no-build-isolation: DeepSpeed builds against the base's torch instead of
# pulling a second torch into an isolated build environment; DS_BUILD_OPS=0 leaves its CUDA ops to JIT.
COPY trainer/requirements.txt /tmp/trainer-requirements.txt
RUN python -m pip install --no-build-isolation -r /tmp/trainer-requirements.txt \
    && rm /tmp/trainer-requirements.txt

# The cache takes other encodings too (data.encoding=cl100k_base): tiktoken re-raises a failed cache write for a
# directory set in TIKTOKEN_CACHE_DIR, so the trainer user must be able to add files. Sticky (1777, as /tmp):
# it can add its own, not replace or delete the baked root-owned gpt2 files.
RUN install -d -m 1777 "$TIKTOKEN_CACHE_DIR" \
    && if [ "$BAKE_TOKENIZER" = "1" ]; then \
        python -c "import tiktoken; tiktoken.get_encoding('gpt2')" \
        && chmod -R a+rX "$TIKTOKEN_CACHE_DIR" && chmod 1777 "$TIKTOKEN_CACHE_DIR"; \
    else \
        echo "BAKE_TOKENIZER=$BAKE_TOKENIZER: gpt2 encoding not baked; pods will need it from TIKTOKEN_CACHE_DIR"; \
    fi

# Root-owned and read-only for the trainer user: a run cannot change the code it runs.
COPY trainer /app/trainer

USER 1000:1000
ENTRYPOINT ["python", "-m", "trainer"]
CMD ["--help"]
