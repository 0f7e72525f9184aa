"""``python -m jaxprune.cli``: the `jaxprune` command (multi-host workers are run so)."""

import sys

from jaxprune.cli import main

sys.exit(main())
