"""``yadml-server key show|rotate``: the project's work-signing key (see work_server.signing)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from work_server.signing import KEY_FILE, ProjectSigner, rotate_key


def add_key_parser(sub: Any) -> None:
    key = sub.add_parser("key", help="show or rotate the project's work-signing key")
    key_sub = key.add_subparsers(dest="key_command", required=True)
    show = key_sub.add_parser("show", help="print the key fingerprint volunteers pin")
    show.add_argument("--state-dir", type=Path, default=Path("var"))
    rotate = key_sub.add_parser(
        "rotate", help="make a new key, endorsed by the old one (restart the server after)"
    )
    rotate.add_argument("--state-dir", type=Path, default=Path("var"))
    rotate.add_argument(
        "--grace-days",
        type=float,
        default=30.0,
        help="keep publishing the old public key this long (default 30)",
    )


def key_main(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    existed = (state_dir / KEY_FILE).is_file()
    if args.key_command == "rotate":
        if not existed:
            print(f"no key in {state_dir} yet: nothing to rotate")
            return 1
        old, new = rotate_key(state_dir, grace_days=args.grace_days)
        print(f"old key: {old} (published for {args.grace_days:g} more days)")
        print(f"new key: {new} (endorsed by the old key)")
        print("restart the server to sign with the new key; publish the new fingerprint")
        return 0
    signer = ProjectSigner.load_or_create(state_dir)
    if not existed:
        print(f"generated a new signing key in {state_dir / KEY_FILE}")
    for key in signer.project_info(time.time()).public_keys:
        print(f"{key.fingerprint}{'' if key.current else '  (retired, still published)'}")
    return 0
