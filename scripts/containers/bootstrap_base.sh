#!/usr/bin/env bash
# Make this machine able to build and run the project's images without a container registry: install podman,
# buildah and mmdebstrap with apt where missing, then build the base image from Debian's own packages once.
#
#   scripts/containers/bootstrap_base.sh            # idempotent: does nothing when all is there
#   BASE_IMAGE=localhost/python:3.11-slim-bookworm  # the tag it builds (then: --build-arg BASE_IMAGE=...)
#
# The base stands in for Docker Hub's python:3.11-slim, which GitHub and Cloud Build pull: Debian bookworm,
# its python3.11 in a venv at /opt/python (first on PATH, so `python` and `pip install` work as in that image),
# CA certificates, useradd, and the same Debian mirror as this machine's apt sources.
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-localhost/python:3.11-slim-bookworm}"
SUITE="${SUITE:-bookworm}"

missing=()
for tool in podman buildah mmdebstrap; do
    command -v "$tool" > /dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        podman buildah mmdebstrap uidmap slirp4netns runc > /dev/null
fi

# Podman's defaults ask for more than a sandboxed machine may have: open files and processes above the hard
# limits (crun: "setrlimit `RLIMIT_NOFILE`: Operation not permitted"), and crun refuses cgroup v1/hybrid
# hierarchies ("cgroups in hybrid mode not supported"). A containers.conf of our own, only where none exists.
CONF=/etc/containers/containers.conf
if [ ! -e "$CONF" ] && [ "$(id -u)" -eq 0 ]; then
    command -v runc > /dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc > /dev/null
    nofile=$(ulimit -Hn)
    nproc=$(( $(ulimit -Hu) < 32768 ? $(ulimit -Hu) : 32768 ))  # above 32768 runc is refused here
    mkdir -p "$(dirname "$CONF")"
    cat > "$CONF" << CONF
# Written by imagenette-drift's scripts/containers/bootstrap_base.sh (limits of this machine; delete to reset).
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[engine]
runtime = "runc"
CONF
fi

if podman image exists "$BASE_IMAGE"; then
    echo "$BASE_IMAGE is there already."
    exit 0
fi

# This machine's Debian mirror (deb822 or one-line sources) for the bootstrap; mmdebstrap's default otherwise.
mirrors=()
for sources in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -s "$sources" ] && grep -q "debian" "$sources"; then
        mirrors=("$sources")
        break
    fi
done

start=$(date +%s)
mmdebstrap --quiet --variant=minbase --format=tar \
    --include=python3.11,python3-venv,ca-certificates,passwd \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='chroot "$1" python3 -m venv /opt/python' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$SUITE" - "${mirrors[@]}" |
    podman import \
        --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --quiet - "$BASE_IMAGE" > /dev/null
echo "built $BASE_IMAGE from Debian $SUITE in $(($(date +%s) - start)) s: $(podman image inspect --format '{{.Size}}' "$BASE_IMAGE") bytes"
