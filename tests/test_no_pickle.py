"""No code path may deserialize with pickle: a volunteer's upload must never run code.

Scans every Python file in the repository (tracked, or new and not ignored) for pickle
and its relatives, ``torch.load`` without ``weights_only=True`` and ``np.load`` with
``allow_pickle=True``. Tensors travel as safetensors, everything else as JSON.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()

_MODULES = r"(?:c?[Pp]ickle|_pickle|dill|cloudpickle|shelve|marshal|joblib)"
_FORBIDDEN = [
    (re.compile(rf"^\s*(?:import|from)\s+{_MODULES}\b", re.M), "imports a pickle-like module"),
    (re.compile(rf"\b{_MODULES}\.(?:loads?|Unpickler)\b"), "unpickles"),
    (re.compile(r"\.read_pickle\("), "pandas read_pickle"),
    (re.compile(r"\byaml\.(?:unsafe_)?load\((?![^)]*SafeLoader)"), "yaml.load without SafeLoader"),
    (re.compile(r"\ballow_pickle\s*=\s*True"), "np.load(allow_pickle=True)"),
]
_TORCH_LOAD = re.compile(r"(?<![\w.])torch\.load\(")


def _call_args(text: str, open_paren: int) -> str:
    depth = 0
    for i in range(open_paren, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_paren : i + 1]
    return text[open_paren:]


def violations(text: str) -> list[str]:
    found = [why for pattern, why in _FORBIDDEN if pattern.search(text)]
    for m in _TORCH_LOAD.finditer(text):
        if not re.search(r"weights_only\s*=\s*True", _call_args(text, m.end() - 1)):
            found.append("torch.load without weights_only=True")
    return found


def _python_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        out = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")]
    return [
        ROOT / p
        for p in out
        if not p.startswith((".venv/", "var/", "runs/")) and (ROOT / p).resolve() != THIS
    ]


def test_no_pickle_anywhere() -> None:
    files = _python_files()
    assert len(files) > 50  # the scan really sees the code base
    bad = {
        str(p.relative_to(ROOT)): v
        for p in files
        if p.is_file() and (v := violations(p.read_text(errors="replace")))
    }
    assert bad == {}, f"unsafe deserialization: {bad}"


@pytest.mark.parametrize(
    "code",
    [
        "import pickle",
        "from pickle import loads",
        "import cloudpickle as cp",
        "data = pickle.loads(body)",
        "state = torch.load(path)",
        "state = torch.load(\n    path,\n    map_location='cpu',\n)",
        "state = torch.load(path, weights_only=False)",
        "arr = np.load(f, allow_pickle=True)",
        "cfg = yaml.load(text)",
        "df = pd.read_pickle(p)",
    ],
)
def test_the_scanner_catches(code: str) -> None:
    assert violations(code)


@pytest.mark.parametrize(
    "code",
    [
        "state = torch.load(path, weights_only=True)",
        "state = torch.load(\n    path, map_location='cpu', weights_only=True\n)",
        "arr = np.load(f)",
        "cfg = yaml.load(text, Loader=yaml.SafeLoader)",
        "from safetensors.torch import load",
        "tensors = safetensors.torch.load(data)",
    ],
)
def test_the_scanner_allows(code: str) -> None:
    assert violations(code) == []
