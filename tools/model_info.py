"""Print a model's parameters, implicit parameters, GFLOPs and layer table.

Usage: python tools/model_info.py configs/models/yolor-p6.yaml [--nc 80] [--img 1280] [--fuse] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified.config import ConfigError  # noqa: E402
from unified.model import build_model  # noqa: E402
from unified.models import model_info  # noqa: E402
from unified.models.info import format_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model YAML (configs/models/*.yaml)")
    parser.add_argument("--nc", type=int, default=None, help="number of classes (default: the YAML's nc)")
    parser.add_argument("--img", type=int, default=640, help="square input size for GFLOPs (default 640)")
    parser.add_argument("--fuse", action="store_true", help="fold BatchNorm and implicit tensors first")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    raise SystemExit(main())
