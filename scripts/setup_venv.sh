#!/usr/bin/env bash
# Create or update the project virtualenv: torch (pinned CPU wheel) first, then the
# project in editable mode with its dev extras. Writes a stamp file when done so that
# `make venv` re-runs this only when pyproject.toml changes.
#
# usage: scripts/setup_venv.sh VENV_DIR STAMP_FILE
set -euo pipefail

venv=${1:?usage: $0 VENV_DIR STAMP_FILE}
stamp=${2:?usage: $0 VENV_DIR STAMP_FILE}
python=${PYTHON:-python3}
torch_pin=${TORCH_PIN:-torch==2.13.0}

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v "$python" >/dev/null || die "$python not found (Python >= 3.11 is required)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$("$python" --version 2>&1) is too old: Python >= 3.11 is required"

if [[ ! -x "$venv/bin/python" ]]; then
  say "creating virtualenv $venv with $("$python" --version 2>&1)"
  "$python" -m venv "$venv"
fi

pip=("$venv/bin/python" -m pip --disable-pip-version-check)

# torch first and pinned exactly: this version resolves to the local CPU wheel; any
# other version would pull gigabytes of CUDA libraries.
say "installing $torch_pin"
"${pip[@]}" install --quiet "$torch_pin"

say "installing yadml (editable) with dev extras"
"${pip[@]}" install --quiet -e '.[dev]'

if "${pip[@]}" show --quiet torchvision >/dev/null 2>&1; then
  say "removing torchvision (the project must not depend on it)"
  "${pip[@]}" uninstall --quiet --yes torchvision
fi

rm -f "$venv"/.stamp-*
touch "$stamp"
say "virtualenv ready: $("$venv/bin/python" -c 'import torch, sys; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}")')"
