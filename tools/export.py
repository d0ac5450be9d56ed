#!/usr/bin/env python3
"""Export a unified model to ONNX (fused, decode in the graph, dynamic batch) and check it in onnxruntime.

``unified export`` with the same flags (the command lives in ``unified/commands/export.py``); this script runs
it from a checkout, installed or not. ``python tools/export.py --help`` lists the flags.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified.commands.export import main, parse_args  # noqa: E402, F401

if __name__ == "__main__":
    raise SystemExit(main())
