#!/usr/bin/env python3
"""Print a model's parameters, implicit parameters, GFLOPs and layer table.

``unified info`` with the same flags (the command lives in ``unified/commands/info.py``); this script runs
it from a checkout, installed or not. ``python tools/model_info.py --help`` lists the flags.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified.commands.info import main, parse_args  # noqa: E402, F401

if __name__ == "__main__":
    raise SystemExit(main())
