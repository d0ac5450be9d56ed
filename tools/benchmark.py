#!/usr/bin/env python3
"""Measure training and inference speed, multi-task and implicit overheads, data, tracker and memory.

``unified benchmark`` with the same flags (the command lives in ``unified/commands/benchmark.py``); this script runs
it from a checkout, installed or not. ``python tools/benchmark.py --help`` lists the flags.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified.commands.benchmark import main, parse_args  # noqa: E402, F401

if __name__ == "__main__":
    raise SystemExit(main())
