"""Print a model's parameters, implicit parameters, GFLOPs and layer table.

Usage: unified info MODEL [--nc 80] [--img 1280] [--fuse] [--json], where MODEL (or --model MODEL) is a
model YAML or a packaged model's name (yolor-tiny, yolor-p6 ...). ``python tools/model_info.py`` is the same
command.
"""

from __future__ import annotations

import argparse
import json
import sys

from unified.config import ConfigError
from unified.model import build_model
from unified.models import model_info
from unified.models.info import format_table


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The flags of ``unified info`` (``tools/model_info.py``); the model by position or as ``--model``."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="model YAML or packaged name (configs/models/*.yaml)")
    parser.add_argument("--model", dest="model_flag", metavar="MODEL", help="the same, as a flag")
    parser.add_argument("--nc", type=int, default=None, help="number of classes (default: the YAML's nc)")
    parser.add_argument("--img", type=int, default=640, help="square input size for GFLOPs (default 640)")
    parser.add_argument("--fuse", action="store_true", help="fold BatchNorm and implicit tensors first")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    if (args.model is None) == (args.model_flag is None):
        parser.error("give the model once: a positional MODEL or --model MODEL")
    args.model = args.model or args.model_flag
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``unified info``; returns the exit code (2: a mistake in the input)."""
    args = parse_args(argv, prog)
    try:
        model = build_model(args.model, nc=args.nc, tasks=["detect"]).eval()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.fuse:
        model.fuse()
    info = model_info(model, args.img, body=model.body, heads=dict(model.heads))
    if args.json:
        result = info.to_dict()
        result.update(
            model=args.model,
            nc=model.model_cfg.nc,
            fused=args.fuse,
            out_shapes=[{"channels": s.channels, "stride": s.stride} for s in model.body.out_shapes],
        )
        print(json.dumps(result))
        return 0
    print(format_table(info.layers))
    print()
    print(f"model            {args.model}{' (fused)' if args.fuse else ''}")
    print(f"classes          {model.model_cfg.nc}")
    print(f"parameters       {info.params:,}")
    print(f"implicit params  {info.implicit_params:,}")
    print(f"GFLOPs           {info.gflops:.4f} at {args.img}x{args.img}")
    print(
        "outputs          " + ", ".join(f"{s.channels} ch / stride {s.stride}" for s in model.body.out_shapes)
    )
    return 0


__all__ = ["main", "parse_args"]
