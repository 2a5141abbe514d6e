#!/usr/bin/env bash
# Build the deployment's images with no registry and no download inside any build:
#   yadml-server:local   deploy/images/app (target server): yadml + dependencies from a
#   yadml-client:local   wheelhouse made on the host (target client: the volunteer daemon)
#   yadml-postgres:local deploy/images/postgres on a debootstrap rootfs with postgresql-15
#   yadml-proxy:local    deploy/images/proxy on a debootstrap rootfs with nginx-light
#                        (the rootfs images, and the app's base: images/build_rootfs.sh)
# Idempotent: an image whose org.yadml.build-hash label matches its inputs is kept.
#
# usage: deploy/build_images.sh [app|postgres|proxy ...]   (default: all)
# env:   PYTHON (default .venv/bin/python), BASE_IMAGE (default: the worker's local base,
#        `images/build_rootfs.sh base python3`), DEBIAN_MIRROR (see images/build_rootfs.sh),
#        FORCE=1 to rebuild anyway
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*" >&2; }

python=${PYTHON:-.venv/bin/python}
export DOCKER_BUILDKIT=0  # the classic builder: no buildx plugin needed

current() {  # current TAG HASH: the image exists with that build hash
  [[ -z "${FORCE:-}" ]] \
    && [[ "$(docker image inspect --format '{{index .Config.Labels "org.yadml.build-hash"}}' "$1" 2>/dev/null)" == "$2" ]]
}

build_app() {
  local base base_id sources hash ctx wheelhouse version
  base=${BASE_IMAGE:-$(images/build_rootfs.sh base python3 | tail -n 1)}
  base_id=$(docker image inspect --format '{{.Id}}' "$base")
  # Everything that ends up in the image: the packages (tracked and new files), the
  # pinned versions of the .venv, the image's own files.
  mapfile -t sources < <(git ls-files -co --exclude-standard -- pyproject.toml \
    yadml_common yadml_trainer work_server volunteer_client deploy/images/app | grep -v '__pycache__' | sort)
  hash=$(
    {
      echo "base $base_id"
      sha256sum "${sources[@]}"
      "$python" -m pip freeze --exclude-editable --disable-pip-version-check
    } | sha256sum | cut -c1-16
  )
  if current yadml-server:local "$hash" && current yadml-client:local "$hash"; then
    say "yadml-server:local and yadml-client:local are up to date"
    return
  fi

  wheelhouse=build/wheelhouse-deploy
  ctx=build/deploy-app-context
  rm -rf "$ctx"
  mkdir -p "$wheelhouse" "$ctx/src"
  # yadml's wheel, from a copy of the sources (no build/ or egg-info left in the tree).
  tar -c "${sources[@]}" | tar -x -C "$ctx/src"
  rm -f "$wheelhouse"/yadml-*.whl
  say "wheel of yadml"
  "$python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$wheelhouse" "$ctx/src" >&2
  # Its dependencies at the .venv's versions (torch's CPU wheel from build/wheelhouse when
  # `make image` has fetched it); cached between builds.
  "$python" -m pip freeze --exclude-editable --disable-pip-version-check >"$ctx/constraints.txt"
  say "wheelhouse $wheelhouse (pip download; cached)"
  "$python" -m pip download -q --disable-pip-version-check --only-binary=:all: \
    --find-links build/wheelhouse --find-links "$wheelhouse" -c "$ctx/constraints.txt" \
    -d "$wheelhouse" "$wheelhouse"/yadml-*.whl pip 2>&1 \
    | { grep -v 'is ignored: it is neither a file nor a directory' || true; } >&2
  rm -rf "$ctx/src"
  # Exactly the wheels yadml needs (the cache may hold older versions): pip's own resolver,
  # offline, on this Python 3.11 (the image's). Dependencies and yadml go in apart, so a
  # change of yadml's sources rebuilds only a small layer.
  "$python" -m pip install -q --disable-pip-version-check --dry-run --ignore-installed \
    --no-index --only-binary=:all: --find-links "$wheelhouse" -c "$ctx/constraints.txt" \
    --report "$ctx/report.json" "$wheelhouse"/yadml-*.whl 2>&1 \
    | { grep -v 'is ignored: it is neither a file nor a directory' || true; } >&2
  mkdir -p "$ctx/wheelhouse/deps" "$ctx/wheelhouse/yadml"
  "$python" -c '
import json, sys, urllib.parse
for item in json.load(open(sys.argv[1]))["install"]:
    print(urllib.parse.unquote(item["download_info"]["url"].rsplit("/", 1)[1]))
' "$ctx/report.json" | while read -r wheel; do
    case "$wheel" in
      yadml-*) dest=yadml ;;
      *) dest=deps ;;
    esac
    ln "$wheelhouse/$wheel" "$ctx/wheelhouse/$dest/" 2>/dev/null || cp "$wheelhouse/$wheel" "$ctx/wheelhouse/$dest/"
  done
  ln "$wheelhouse"/pip-*.whl "$ctx/wheelhouse/" 2>/dev/null || cp "$wheelhouse"/pip-*.whl "$ctx/wheelhouse/"
  cp deploy/images/app/Dockerfile deploy/images/app/*.sh deploy/images/app/init.py "$ctx/"
  version=$("$python" -c 'import importlib.metadata as m; print(m.version("yadml"))')
  # The build stage is tagged: it is the cache of the next build (the dependency layer).
  say "docker build yadml-app-build:cache (dependencies)"
  docker build --quiet --force-rm --target build --build-arg "BASE_IMAGE=$base" \
    -t yadml-app-build:cache "$ctx" >&2
  for target in server client; do
    say "docker build yadml-$target:local (base $base)"
    docker build --quiet --force-rm --target "$target" \
      --build-arg "BASE_IMAGE=$base" --build-arg "YADML_VERSION=$version" \
      --build-arg "BUILD_HASH=$hash" -t "yadml-$target:local" "$ctx" >&2
  done
  rm -rf "$ctx"
}

build_rootfs_image() {  # build_rootfs_image NAME PACKAGE...
  local name=$1 rootfs rootfs_id hash
  shift
  rootfs=$(images/build_rootfs.sh "$name" "$@" | tail -n 1)
  rootfs_id=$(docker image inspect --format '{{.Id}}' "$rootfs")
  hash=$({ echo "rootfs $rootfs_id"; sha256sum deploy/images/"$name"/*; } | sha256sum | cut -c1-16)
  if current "yadml-$name:local" "$hash"; then
    say "yadml-$name:local is up to date"
    return
  fi
  say "docker build yadml-$name:local (rootfs $rootfs)"
  docker build --quiet --force-rm --build-arg "ROOTFS=$rootfs" --build-arg "BUILD_HASH=$hash" \
    -t "yadml-$name:local" "deploy/images/$name" >&2
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(app postgres proxy)
for target in "${targets[@]}"; do
  case "$target" in
    app) build_app ;;
    postgres) build_rootfs_image postgres postgresql-15 ;;
    proxy) build_rootfs_image proxy nginx-light ;;
    *) printf 'error: unknown image %s (app, postgres, proxy)\n' "$target" >&2; exit 2 ;;
  esac
done
# Images of earlier builds that no tag names any more (this kit's label only).
docker image prune --force --filter label=org.yadml.deploy=1 >/dev/null
docker image ls --filter 'reference=yadml-*:local' >&2
