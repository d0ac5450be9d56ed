#!/usr/bin/env python3
"""Run the multi-object tracker and write a MOTChallenge result file.

``unified track`` with the same flags (the command lives in ``unified/commands/track.py``); this script runs
it from a checkout, installed or not. ``python tools/track.py --help`` lists the flags.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified.commands.track import main, parse_args, track_with_model  # noqa: E402, F401

if __name__ == "__main__":
    raise SystemExit(main())
