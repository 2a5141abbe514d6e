"""``python -m work_server.demo``: see :mod:`work_server.demo`."""

from work_server.demo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
