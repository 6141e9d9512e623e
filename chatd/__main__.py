"""``python -m chatd``: the same program as the ``chatd`` command (chatd/cli.py)."""

from .cli import main

raise SystemExit(main())
