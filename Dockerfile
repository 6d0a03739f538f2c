# syntax=docker/dockerfile:1
# Training image: `imagenette` is the entrypoint; mount the repo (configs, data, outputs) at /work.
#   docker build -t imagenette-drift .                                  # CPU torch (default)
#   docker build -t imagenette-drift:cu128 --build-arg TORCH_VARIANT=cu128 .   # CUDA 12.8 torch
#   docker run --rm -v "$PWD:/work" imagenette-drift fit --config configs/quickstart.yaml
# The base: Docker Hub's python:3.11-slim (GitHub, Cloud Build); where no registry is reachable, a local
# Debian bookworm + python3.11 image built by scripts/containers/bootstrap_base.sh (docs/containers.md).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# cpu, or a CUDA build of the PyTorch wheel index (cu126, cu128, ...); GPUs need `docker run --gpus all`.
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL="https://download.pytorch.org/whl/${TORCH_VARIANT}"
# A package mirror, a local wheel folder, a proxy's CA bundle, a constraint file: pip reads these during the
# build only (unset: PyPI, as on GitHub and Cloud Build; scripts/containers/build_images.py passes this host's).
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CONSTRAINT
ARG PIP_CERT
ARG PIP_TRUSTED_HOST

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    WANDB_DIR=/tmp/wandb

# OpenCV (from the corruptions extra, used by `imagenette drift --data.corruption`) loads these shared libraries.
# Unpinned on purpose: the base image's Debian release fixes their versions and brings security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin imagenette

WORKDIR /opt/imagenette-drift
# torch first, in its own layer: it is the largest and changes least.
RUN pip install --index-url "${TORCH_INDEX_URL}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
COPY pyproject.toml README.md ./
COPY src ./src
# The project itself from the copied source; its dependencies are bounded in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install ".[corruptions]"
COPY configs ./configs

USER 1000:1000
WORKDIR /work
ENTRYPOINT ["imagenette"]
CMD ["--help"]
