#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io if dockerd is missing, start
# dockerd (overlay2 storage) in the background if none runs, wait until it answers.
# Idempotent and quick when the engine is already up.
#
# usage: scripts/docker_engine.sh     env: DOCKERD_LOG (default /var/log/yadml-dockerd.log)
set -euo pipefail

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null; then
  [[ $(id -u) -eq 0 ]] || die "dockerd is not installed; as root: apt-get install docker.io"
  say "installing docker.io (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y -q docker.io >/dev/null \
    || { apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null \
         && apt-get -o DPkg::Lock::Timeout=600 install -y -q docker.io >/dev/null; }
fi

if ! docker info >/dev/null 2>&1; then
  [[ $(id -u) -eq 0 ]] || die "no Docker engine answers and only root can start dockerd here"
  if ! pgrep -x dockerd >/dev/null; then
    log=${DOCKERD_LOG:-/var/log/yadml-dockerd.log}
    say "starting dockerd --storage-driver=overlay2 (log: $log)"
    nohup dockerd --storage-driver=overlay2 >>"$log" 2>&1 </dev/null &
    disown || true
  fi
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || die "dockerd did not answer within 60 s (see ${log:-its log})"
fi
say "Docker engine $(docker version --format '{{.Server.Version}}') ($(docker info --format '{{.Driver}}'))"
