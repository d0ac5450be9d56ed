#!/usr/bin/env python3
"""Evaluate a trained model on its tasks, or tracker outputs alone (MOT metrics).

``unified val`` with the same flags (the command lives in ``unified/commands/val.py``); this script runs
it from a checkout, installed or not. ``python tools/evaluate.py --help`` lists the flags.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified.commands.val import main, parse_args, run_model_mode, write_json  # noqa: E402, F401

if __name__ == "__main__":
    raise SystemExit(main())
