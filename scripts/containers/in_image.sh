#!/usr/bin/env bash
# Run `imagenette ARGS...` inside the training image with the current folder (the repo) mounted at /work:
# what CI's train job runs (.github/workflows/ci.yml) and what tests/containers run here with podman.
#
#   scripts/containers/in_image.sh IMAGE fit --config configs/quickstart.yaml
#   ENGINE=podman scripts/containers/in_image.sh IMAGE test --config configs/quickstart.yaml --ckpt_path ...
#
# ENGINE: docker (default) or podman, which spell these flags the same way. ENGINE_RUN_ARGS: extra `run` flags,
# split on spaces (e.g. "--gpus all" with a CUDA image). The container never runs as root: it runs as the
# invoking user, so what it writes is theirs. An invoking root (a root CI box) gets the image's own user
# (uid 1000) for the run instead, and OUTPUTS (default: outputs) is handed to it and back to root afterwards.
set -euo pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: $0 IMAGE COMMAND [ARGS...]   (COMMAND: fit, test, drift, report, ...)" >&2
    exit 2
fi
image=$1
shift
engine=${ENGINE:-docker}
user="$(id -u):$(id -g)"
if [ "$(id -u)" -eq 0 ]; then
    user=1000:1000
    outputs=${OUTPUTS:-outputs}
    mkdir -p "$outputs"
    chown -R "$user" "$outputs"
    trap 'chown -R 0:0 "$outputs"' EXIT
fi
# shellcheck disable=SC2086 # ENGINE_RUN_ARGS is a list of flags
"$engine" run --rm --user "$user" -e HOME=/tmp -e WANDB_MODE -v "$PWD:/work" ${ENGINE_RUN_ARGS:-} "$image" "$@"
