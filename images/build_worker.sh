#!/usr/bin/env bash
# Build the worker image (images/worker/Dockerfile) with no registry and no download inside
# the build:
#   1. the base: BASE_IMAGE if set (e.g. python:3.11-slim-bookworm for users with a
#      registry), else the local debootstrap base (images/build_rootfs.sh base python3);
#   2. a wheelhouse on the host (build/wheelhouse, kept between builds: `pip download` of
#      images/worker/requirements.txt plus pip itself);
#   3. a build context (build/worker-context) with the wheelhouse (hard links), the
#      requirements and the trainer's files;
#   4. `docker build`, tagged yadml-worker:<trainer version> and yadml-worker:latest.
# Idempotent: when an image with that tag exists and its org.yadml.build-hash label matches
# the context (Dockerfile, requirements, trainer files, base image id), nothing is rebuilt.
#
# usage: images/build_worker.sh          prints the image tag on its last line
# env:   PYTHON (default .venv/bin/python), BASE_IMAGE, FORCE=1 to rebuild anyway
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*" >&2; }

python=${PYTHON:-.venv/bin/python}
export DOCKER_BUILDKIT=0  # the classic builder: no buildx plugin needed

base=${BASE_IMAGE:-}
if [[ -z "$base" ]]; then
  base=$(images/build_rootfs.sh base python3 | tail -n 1)
fi
base_id=$(docker image inspect --format '{{.Id}}' "$base")

# The trainer package says which files it runs and what version they make.
version=$("$python" -m yadml_trainer.version version)
tag="yadml-worker:${version}"
mapfile -t files < <("$python" -m yadml_trainer.version files)

build_hash=$(
  {
    echo "base $base_id"
    sha256sum images/worker/Dockerfile images/worker/requirements.txt images/worker/warmup.py \
      "${files[@]}"
  } | sha256sum | cut -c1-16
)

if [[ -z "${FORCE:-}" ]] \
  && [[ "$(docker image inspect --format '{{index .Config.Labels "org.yadml.build-hash"}}' "$tag" 2>/dev/null)" == "$build_hash" ]]; then
  say "worker image $tag is up to date"
  docker tag "$tag" yadml-worker:latest
  echo "$tag"
  exit 0
fi

wheelhouse=build/wheelhouse
mkdir -p "$wheelhouse"
say "wheelhouse $wheelhouse (pip download; cached)"
"$python" -m pip download -qq --disable-pip-version-check --no-deps --only-binary=:all: \
  -d "$wheelhouse" -r images/worker/requirements.txt pip

ctx=build/worker-context
rm -rf "$ctx"
mkdir -p "$ctx/app"
cp images/worker/Dockerfile images/worker/requirements.txt images/worker/warmup.py "$ctx/"
cp -al "$wheelhouse" "$ctx/wheelhouse" 2>/dev/null || cp -a "$wheelhouse" "$ctx/wheelhouse"
for f in "${files[@]}"; do
  mkdir -p "$ctx/app/$(dirname "$f")"
  cp "$f" "$ctx/app/$f"
done

say "docker build $tag (base $base)"
docker build --quiet --force-rm \
  --build-arg "BASE_IMAGE=$base" \
  --build-arg "TRAINER_VERSION=$version" \
  --build-arg "BUILD_HASH=$build_hash" \
  -t "$tag" -t yadml-worker:latest "$ctx" >&2
rm -rf "$ctx"
docker image ls "$tag" >&2
echo "$tag"
