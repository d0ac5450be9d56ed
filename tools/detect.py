#!/usr/bin/env python3
"""Run a unified model on images, folders, globs or videos and save what it sees.

``unified predict`` with the same flags (the command lives in ``unified/commands/predict.py``); this script runs
it from a checkout, installed or not. ``python tools/detect.py --help`` lists the flags.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified.commands.predict import main, parse_args  # noqa: E402, F401

if __name__ == "__main__":
    raise SystemExit(main())
