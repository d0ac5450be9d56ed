#!/usr/bin/env python3
"""Convert an official YOLOR checkpoint (main or paper branch) into a unified checkpoint.

``unified convert`` with the same flags (the command lives in ``unified/commands/convert.py``); this script runs
it from a checkout, installed or not. ``python tools/convert_official.py --help`` lists the flags.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified.commands.convert import main, read_names  # noqa: E402, F401

if __name__ == "__main__":
    raise SystemExit(main())
