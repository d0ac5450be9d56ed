#!/usr/bin/env python3
"""Generate the built-in synthetic world (cached: a folder with the same parameters is reused).

``unified make-synthetic`` with the same flags (the command lives in ``unified/commands/make_synthetic.py``); this script runs
it from a checkout, installed or not. ``python tools/make_synthetic.py --help`` lists the flags.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified.commands.make_synthetic import EPILOG, main  # noqa: E402, F401

if __name__ == "__main__":
    raise SystemExit(main())
