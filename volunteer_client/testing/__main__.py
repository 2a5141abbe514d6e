"""``python -m volunteer_client.testing``: the client with fault and attack injection."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
