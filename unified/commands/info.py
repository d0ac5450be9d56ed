"""Print a model's parameters, implicit parameters, GFLOPs and layer table.

Usage: unified info MODEL [--nc 80] [--img 1280] [--fuse] [--json] [--tasks detect,jdc,jde]
[--sharing none|alias|latent] [--form vector|nn|mf] [--identities 100], where MODEL (or --model MODEL) is a
model YAML or a packaged model's name (yolor-tiny, yolor-p6 ...). With several tasks the implicit knowledge is
shared as a multi-task experiment shares it by default (``implicit.sharing``: latent); ``--sharing`` says
otherwise. The implicit parameters are reported as the shared latent and the consumers' own.
``python tools/model_info.py`` is the same command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from unified.config import ConfigError
from unified.implicit import FORMS, SHARINGS
from unified.model import build_model
from unified.models import load_model_config, model_info
from unified.models.info import format_table
from unified.registry import RegistryError
from unified.task import DatasetInfo, resolve_tasks

#: Identities assumed for a ``jde`` head when ``--identities`` is not given (its classifier's size).
DEFAULT_IDENTITIES = 100


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The flags of ``unified info`` (``tools/model_info.py``); the model by position or as ``--model``."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="model YAML or packaged name (configs/models/*.yaml)")
    parser.add_argument("--model", dest="model_flag", metavar="MODEL", help="the same, as a flag")
    parser.add_argument("--nc", type=int, default=None, help="number of classes (default: the YAML's nc)")
    parser.add_argument("--img", type=int, default=640, help="square input size for GFLOPs (default 640)")
    parser.add_argument("--fuse", action="store_true", help="fold BatchNorm and implicit tensors first")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--tasks", default="detect", help="comma-separated tasks (default detect)")
    parser.add_argument(
        "--sharing", choices=SHARINGS, help="implicit sharing (default: latent for several tasks)"
    )
    parser.add_argument("--form", choices=FORMS, help="implicit form of the heads (default: the YAML's)")
    parser.add_argument(
        "--identities",
        type=int,
        default=None,
        help=f"identities of a jde head (default {DEFAULT_IDENTITIES})",
    )
    args = parser.parse_args(argv)
    if (args.model is None) == (args.model_flag is None):
        parser.error("give the model once: a positional MODEL or --model MODEL")
    args.model = args.model or args.model_flag
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``unified info``; returns the exit code (2: a mistake in the input)."""
    args = parse_args(argv, prog)
    try:
        model_cfg = load_model_config(args.model)
        if args.form:
            model_cfg = dataclasses.replace(
                model_cfg, head=dataclasses.replace(model_cfg.head, implicit_form=args.form)
            )
        tasks = resolve_tasks([t.strip() for t in args.tasks.split(",") if t.strip()])
        nc = args.nc if args.nc is not None else model_cfg.nc
        identities = args.identities if args.identities is not None else DEFAULT_IDENTITIES
        info_ = DatasetInfo(class_names=[str(i) for i in range(nc)], num_identities=identities)
        # without --sharing as an experiment resolves it: latent for several tasks, none for one
        model = build_model(model_cfg, tasks=tasks, info=info_, implicit={"sharing": args.sharing}).eval()
    except (ConfigError, RegistryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    implicit = model.bank.summary()
    if args.fuse:
        model.fuse()
    info = model_info(model, args.img, body=model.body, heads=dict(model.heads))
    if args.json:
        result = info.to_dict()
        result.update(
            model=args.model,
            nc=model.model_cfg.nc,
            tasks=model.task_names,
            fused=args.fuse,
            implicit=dataclasses.asdict(implicit),
            out_shapes=[{"channels": s.channels, "stride": s.stride} for s in model.body.out_shapes],
        )
        print(json.dumps(result))
        return 0
    print(format_table(info.layers))
    print()
    print(f"model            {args.model}{' (fused)' if args.fuse else ''}")
    print(f"tasks            {', '.join(model.task_names)}")
    print(f"classes          {model.model_cfg.nc}")
    print(f"parameters       {info.params:,}")
    print(f"implicit params  {info.implicit_params:,}")
    print(
        f"implicit sharing {implicit.sharing}, form {model.model_cfg.head.implicit_form}: "
        f"{implicit.consumers} consumers, {implicit.tensors} tensors; shared latent {implicit.latent_params:,}, "
        f"consumers' own {implicit.consumer_params:,} (of which {implicit.aliased_params:,} in "
        f"{implicit.aliased_tensors} tensors read by several consumers)"
    )
    print(f"GFLOPs           {info.gflops:.4f} at {args.img}x{args.img}")
    print(
        "outputs          " + ", ".join(f"{s.channels} ch / stride {s.stride}" for s in model.body.out_shapes)
    )
    return 0


__all__ = ["main", "parse_args"]
