"""Convert an official YOLOR checkpoint (main or paper branch) into a unified checkpoint.

    unified convert --weights yolor_p6.pt --cfg cfg/yolor_p6.cfg --out yolor_p6_unified.pt
    unified convert --weights yolor-p6-paper.pt --out yolor_p6_paper_unified.pt

``main`` checkpoints (a ``module_list.*`` state_dict) need their darknet ``--cfg``; ``paper`` checkpoints (a
pickled ``Model``) carry their YAML. The checkpoint is read with a restricted unpickler: nothing in it is
executed and the official code need not be importable. Next to OUT.pt the tool writes OUT.yaml, the
translated model config; fine-tune on your data (any class count) with

    unified train --model OUT.yaml --weights OUT.pt --data DATA.yaml --tasks detect

A darknet cfg becomes one body row per section. With --model the weights are laid out as another config of
the same network instead, e.g. the zoo's compact YAML, after checking on a random input that both compute
the same outputs (then fine-tune with that YAML):

    unified convert --weights yolor_csp.pt --cfg cfg/yolor_csp.cfg --model yolor-csp --out yolor_csp_unified.pt

``python tools/convert_official.py`` is the same command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from unified.checkpoint import CheckpointError
from unified.config import ConfigError
from unified.interop import (
    OfficialCheckpointError,
    convert_official,
    model_yaml_text,
    relayout,
    save_converted,
)


def read_names(path: str) -> list[str]:
    """Class names from a ``.names`` file (one per line) or a dataset YAML's ``names`` (list or id map)."""
    file = Path(path)
    text = file.read_text()
    if file.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(text) or {}
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names)]
        if not isinstance(names, list):
            raise ConfigError(f"{path}: no 'names' list in this YAML")
        return [str(n) for n in names]
    return [line.strip() for line in text.splitlines() if line.strip()]


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``unified convert``; returns the exit code (2: a mistake in the input)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", required=True, help="official checkpoint (.pt)")
    parser.add_argument("--cfg", help="darknet cfg of a main-branch checkpoint (cfg/yolor_*.cfg)")
    parser.add_argument("--out", required=True, help="unified checkpoint to write (.pt)")
    parser.add_argument("--names", help="class names: a .names file or a dataset YAML with 'names'")
    parser.add_argument(
        "--model", help="lay the weights out as this model YAML (or packaged name) of the same network"
    )
    parser.add_argument("--no-yaml", dest="write_yaml", action="store_false", help="do not write OUT.yaml")
    args = parser.parse_args(argv)
    try:
        names = read_names(args.names) if args.names else None
        converted = convert_official(args.weights, args.cfg, names)
        if args.model:
            converted = relayout(converted, args.model)
        out = save_converted(
            converted, args.out, {"weights": str(args.weights), "cfg": str(args.cfg) if args.cfg else None}
        )
    except (ConfigError, OfficialCheckpointError, CheckpointError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    params = sum(v.numel() for k, v in converted.state_dict.items() if not k.endswith(_BUFFERS))
    print(f"converted {args.weights} ({converted.branch} branch) -> {out}")
    print(
        f"  classes     {len(converted.class_names)}: {', '.join(converted.class_names[:8])}"
        f"{' ...' if len(converted.class_names) > 8 else ''}"
    )
    print(f"  parameters  {params:,} (official model: {converted.official_params:,})")
    for note in converted.notes:
        print(f"  note        {note}")
    if args.write_yaml:
        yaml_path = Path(out).with_suffix(".yaml")
        yaml_path.write_text(
            model_yaml_text(converted, f"Converted by tools/convert_official.py from {args.weights}")
        )
        print(f"  model YAML  {yaml_path} (fine-tune with --model {yaml_path} --weights {out})")
    return 0


_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

__all__ = ["main", "read_names"]
