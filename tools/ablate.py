#!/usr/bin/env python3
"""Run a named ablation study: each variant with several seeds, reported with error bars.

``unified ablate`` with the same flags (the command lives in ``unified/commands/ablate.py``); this script runs
it from a checkout, installed or not. ``python tools/ablate.py --help`` lists the flags.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified.commands.ablate import main, parse_args  # noqa: E402, F401

if __name__ == "__main__":
    raise SystemExit(main())
