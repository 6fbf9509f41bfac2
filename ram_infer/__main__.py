"""``python -m ram_infer``: the ``ram-infer`` command line (ram_infer/cli.py)."""

from ram_infer.cli import main

raise SystemExit(main())
