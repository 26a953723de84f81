#!/usr/bin/env bash
# make image: build the one model-server image (templates/container/Dockerfile) with podman,
# offline-friendly: no registry is pulled from. The base is a Debian rootfs made here once
# with debootstrap (cached as build/image/base-bookworm.tar and in podman's store); the aiaas
# wheel is built from this checkout; torch comes from the local wheel folder and the other
# packages from the package registry through the host's CA bundle (both mounted read-only
# for the build only, nothing of them stays in the image).
#
# Environment: IMAGE (default localhost/aiaas-server:latest), BASE_IMAGE (default: the
# debootstrap base), WHEELS (local wheel folder, default: pip's find-links or /opt/wheels),
# CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt), PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/aiaas-server:latest}
DEFAULT_BASE=localhost/aiaas-base:bookworm
BASE_IMAGE=${BASE_IMAGE:-$DEFAULT_BASE}
PYTHON=${PYTHON:-.venv/bin/python}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
WHEELS=${WHEELS:-$("$PYTHON" -m pip config get global.find-links 2>/dev/null || echo /opt/wheels)}
CACHE=build/image
BASE_TAR=$CACHE/base-bookworm.tar

# Temporary folders this run made, removed however it ends.
TEMPS=()
cleanup() { ((${#TEMPS[@]} == 0)) || rm -rf --one-file-system "${TEMPS[@]}"; }
trap cleanup EXIT

say() { printf '[image] %s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

install_tools() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v bc >/dev/null || missing+=(bc)
    if ((${#missing[@]})); then
        echo "[image] installing ${missing[*]} (apt)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# The Debian mirror apt already uses (the first URIs: line, or the first deb line).
debian_mirror() {
    local uri
    uri=$(grep -hsoE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources | head -1 | awk '{print $2}')
    [[ -n $uri ]] || uri=$(grep -hsoE '^deb +[^ ]+' /etc/apt/sources.list | head -1 | awk '{print $2}')
    echo "${uri:-http://deb.debian.org/debian}"
}

make_base() {
    if podman image exists "$BASE_IMAGE"; then
        say "base $BASE_IMAGE: cached"
        return
    fi
    mkdir -p "$CACHE"
    local t0
    t0=$(now)
    if [[ ! -s $BASE_TAR ]]; then
        local rootfs
        rootfs=$(mktemp -d /tmp/aiaas-rootfs.XXXXXX)
        TEMPS+=("$rootfs")
        say "debootstrap bookworm from $(debian_mirror) into $rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$rootfs" "$(debian_mirror)" >"$CACHE/debootstrap.log" 2>&1 \
            || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
        tar -C "$rootfs" -cf "$BASE_TAR.partial" . && mv "$BASE_TAR.partial" "$BASE_TAR"
    fi
    # Debian 12's own python3 (3.11.2): aiaas unpacks bundles without tarfile's data filter
    # (3.11.4+) by checking members itself, so no newer Python is needed.
    podman import -q --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        "$BASE_TAR" "$BASE_IMAGE" >/dev/null
    say "base $BASE_IMAGE made in $(since "$t0") s"
}

# The aiaas wheel, built from a copy of the sources (no build/ leftovers from the checkout).
build_wheel() {
    local src
    src=$(mktemp -d /tmp/aiaas-src.XXXXXX)
    CONTEXT=$(mktemp -d /tmp/aiaas-context.XXXXXX)
    TEMPS+=("$src" "$CONTEXT")
    tar -cf - --exclude=__pycache__ --exclude='*.egg-info' \
        pyproject.toml setup.py README.md aiaas adapters functions templates | tar -C "$src" -xf -
    "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$CONTEXT" "$src"
}

main() {
    local t0 t1
    t0=$(now)
    install_tools
    if [[ $BASE_IMAGE == "$DEFAULT_BASE" ]]; then
        make_base
    fi
    build_wheel
    t1=$(now)
    say "podman build $IMAGE from $BASE_IMAGE"
    local previous
    previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    nice -n 10 podman build --isolation chroot --format docker -q \
        -f templates/container/Dockerfile \
        --build-arg BASE_IMAGE="$BASE_IMAGE" \
        --build-arg WHEELS_DIR=/run/aiaas-wheels \
        --build-arg CA_BUNDLE=/run/aiaas-ca.pem \
        -v "$WHEELS:/run/aiaas-wheels:ro" \
        -v "$CA_BUNDLE:/run/aiaas-ca.pem:ro" \
        -t "$IMAGE" "$CONTEXT" >/dev/null
    # The image this build replaced, now untagged (kept if something else still uses it).
    if [[ -n $previous && $previous != $(podman image inspect --format '{{.Id}}' "$IMAGE") ]]; then
        podman rmi "$previous" >/dev/null 2>&1 || true
    fi
    local size
    size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
    say "built $IMAGE: $((size / 1000000)) MB; podman build $(since "$t1") s, total $(since "$t0") s"
}

main "$@"
