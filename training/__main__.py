"""``python -m ram_infer.training`` (and ``torchrun … -m ram_infer.training``) runs ``ram-train``."""

import sys

from .cli import main

sys.exit(main())
