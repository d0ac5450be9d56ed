"""The ``unified`` command (installed by ``pip install .``; also ``python -m unified``) and its subcommands.

Each subcommand is one module of this package with the flags of the matching script in ``tools/``, which
only calls it: ``unified train`` is ``tools/train_multitask.py``, ``unified val`` is ``tools/evaluate.py``
and so on (:data:`COMMANDS`). A subcommand's module is imported only when it runs, so ``unified --help``
stays instant.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple


class Command(NamedTuple):
    """A subcommand: its module under ``unified.commands``, the tool script it is, and one line of help."""

    module: str
    tool: str
    summary: str


COMMANDS: dict[str, Command] = {
    "train": Command("train", "train_multitask", "train (and evaluate) a multi-task model; --resume a run"),
    "val": Command("val", "evaluate", "evaluate a checkpoint on a dataset, or tracker outputs (MOT metrics)"),
    "predict": Command("predict", "detect", "predict on images, folders, globs or videos; save what it sees"),
    "track": Command("track", "track", "track objects through a sequence or video (model or detection file)"),
    "export": Command("export", "export", "export a checkpoint to ONNX and check it in onnxruntime"),
    "convert": Command("convert", "convert_official", "convert an official YOLOR checkpoint"),
    "info": Command("info", "model_info", "parameters, implicit parameters, GFLOPs and layers of a model"),
    "benchmark": Command("benchmark", "benchmark", "measure training and inference speed and memory"),
    "make-synthetic": Command("make_synthetic", "make_synthetic", "generate the built-in synthetic world"),
    "ablate": Command("ablate", "ablate", "ablation study: variants x seeds, mean ± std, paired intervals"),
}


def add_image_size_argument(parser: argparse.ArgumentParser, default: int | None, help: str) -> None:
    """``--img`` with the YOLO scripts' alias ``--img-size``; pass argv through :func:`fold_image_size` first,
    which takes their ``--img H W`` form too."""
    parser.add_argument("--img", "--img-size", dest="img", type=int, default=default, help=help)


def fold_image_size(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> list[str]:
    """``argv`` with ``--img H W`` (the YOLO scripts' train/test size pair) folded into ``--img H`` when both
    are the same; sizes that differ are refused, as inputs are square (the letterbox pads to a square)."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, word in enumerate(args[:-2]):
        if word in ("--img", "--img-size") and args[i + 1].isdigit() and args[i + 2].isdigit():
            if args[i + 1] != args[i + 2]:
                parser.error(
                    f"{word} {args[i + 1]} {args[i + 2]}: one square size is used (the letterbox pads to a "
                    f"square), e.g. {word} {max(int(args[i + 1]), int(args[i + 2]))}"
                )
            del args[i + 2]
            break
    return args


def check_image_size(model: object, size: int, flag: str = "--img") -> None:
    """``--img`` must be a positive multiple of the model's largest stride (the letterbox pads to it).

    Raises:
        ConfigError: naming the flag and the value typed.
    """
    from unified.config import ConfigError

    detect = getattr(model, "tasks", {}).get("detect")
    stride = max(model.heads["detect"].stride_values) if detect is not None else 32
    if size <= 0 or size % stride:
        raise ConfigError(
            f"{flag} {size}: must be a positive multiple of the model's largest stride {stride}"
        )


def usage() -> str:
    """The overview ``unified --help`` prints."""
    width = max(map(len, COMMANDS))
    lines = [
        "usage: unified COMMAND [flags]   (unified COMMAND --help for its flags)",
        "",
        "commands:",
        *(f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()),
        "",
        'Python: from unified import Model; Model("yolor-tiny").train(data=...)',
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``unified COMMAND ...``; returns the exit code (2 for an unknown or missing command)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args and args[0] == "--version":
        from unified import __version__

        print(f"unified {__version__}")
        return 0
    if not args:
        print(usage(), file=sys.stderr)
        return 2
    name, rest = args[0], args[1:]
    command = COMMANDS.get(name)
    if command is None:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"error: unknown command {name!r}{hint}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"unified.commands.{command.module}")
    return module.main(rest, prog=f"unified {name}")


__all__ = [
    "COMMANDS",
    "Command",
    "add_image_size_argument",
    "check_image_size",
    "fold_image_size",
    "main",
    "usage",
]
