#!/usr/bin/env python3
"""Train (and evaluate) a unified multi-task model.

``unified train`` with the same flags (the command lives in ``unified/commands/train.py``); this script runs
it from a checkout, installed or not. ``python tools/train_multitask.py --help`` lists the flags.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified.commands.train import main, parse_args  # noqa: E402, F401

if __name__ == "__main__":
    raise SystemExit(main())
