"""Train (and evaluate) a unified multi-task model.

    unified train --config synthetic --tasks detect,jdc,jde      # a packaged experiment, by name
    unified train --model yolor-tiny --data data.yaml --epochs 30 --img 320
    torchrun --nproc_per_node 2 -m unified train --config ... --device 0,1
    unified train --resume runs/train/exp      # continue a stopped run exactly (from any folder)

Any ``key.sub=value`` after the flags overrides the experiment config (e.g. ``balancer.name=uncertainty``).
The YOLO scripts' habits work too: ``--cfg`` for ``--model``, ``--img-size`` and ``--img 640 640``, ``--hyp``
with an official hyper-parameter file (each key mapped to ``optim.*``, ``augment.*`` or
``task_options.detect.*``; ``key=value`` overrides win over it). ``--tasks`` may pick a subset of the
experiment's tasks: the options and balancer weights of the others are set aside with a note.
``python tools/train_multitask.py`` is the same command.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import torch

from unified.checkpoint import CheckpointError
from unified.commands import add_image_size_argument, fold_image_size
from unified.config import ConfigError
from unified.data.validate import DataError
from unified.engine.experiment import hyp_overrides, load_experiment, set_aside_tasks_left_out
from unified.engine.launch import flags_to_overrides, resume_experiment, run_training
from unified.engine.resume import find_resume_checkpoint
from unified.engine.trainer import NonFiniteLossError
from unified.registry import RegistryError


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The flags of ``unified train`` (``tools/train_multitask.py``)."""
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", help="experiment YAML, or a packaged experiment's name (synthetic)")
    p.add_argument("--tasks", help="comma-separated tasks, e.g. detect,jdc,jde")
    p.add_argument("--data", help="dataset YAML")
    p.add_argument(
        "--model",
        "--cfg",
        dest="model",
        help="(alias --cfg) model YAML, or a packaged model's name (yolor-tiny, yolor-p6 ...)",
    )
    p.add_argument("--hyp", help="an official YOLOR hyper-parameter file (data/hyp.scratch.640.yaml ...)")
    p.add_argument("--weights", help="initial weights (a unified checkpoint; convert official ones first)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int, help="total batch size over all ranks")
    add_image_size_argument(p, None, "training and evaluation image size (alias --img-size)")
    p.add_argument("--device", help="cpu, 0, or 0,1")
    p.add_argument("--workers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--sync-bn", dest="sync_bn", action="store_true")
    p.add_argument(
        "--noautoanchor", action="store_true", help="keep the model's anchors (train.autoanchor=false)"
    )
    p.add_argument("--project")
    p.add_argument("--name")
    p.add_argument("--exist-ok", dest="exist_ok", action="store_true")
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="RUN_OR_CHECKPOINT",
        help="continue a run: its folder, a checkpoint in its weights/, or nothing for the newest under --project "
        "(to train on from a loose checkpoint, start a new run with --weights)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bars (for logs)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value")
    return p.parse_args(fold_image_size(p, argv))


class _CtrlC:
    """Remembers a Ctrl-C while still raising KeyboardInterrupt, so a failure it caused reads as one."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, signum: int, frame: object) -> None:
        self.seen = True
        signal.default_int_handler(signum, frame)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``unified train``; returns the exit code (2: a mistake in the input, 1: diverged, 130: Ctrl-C)."""
    args = parse_args(argv, prog)
    ctrl_c = _CtrlC()
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        return _train(args, ctrl_c)
    previous = signal.signal(signal.SIGINT, ctrl_c)
    try:
        return _train(args, ctrl_c)
    finally:
        signal.signal(signal.SIGINT, previous)


def _train(args: argparse.Namespace, ctrl_c: _CtrlC) -> int:
    try:
        if args.resume is not None and args.hyp:  # hyper-parameters are the run's own: a new run takes them
            raise ConfigError(f"--hyp {args.hyp} cannot change a resumed run; start a new run with it")
        if args.resume is not None:
            checkpoint = find_resume_checkpoint(args.resume, args.project or "runs/train")
            cfg = resume_experiment(checkpoint, args, args.overrides)
            run_training(cfg, resume_from=checkpoint, progress=args.progress)
        else:
            hyp, notes = hyp_overrides(args.hyp) if args.hyp else ([], [])
            for note in notes:
                print(note)
            # key=value overrides come last: they win over --hyp
            cfg = load_experiment(args.config, [*flags_to_overrides(args), *hyp, *args.overrides])
            if args.tasks:  # a subset of the experiment's tasks: their options and weights set aside
                cfg, notes = set_aside_tasks_left_out(cfg)
                for note in notes:
                    print(note)
            if cfg.train.sync_bn and not torch.cuda.is_available():
                raise ConfigError(
                    "--sync-bn synchronises batch norm across GPUs, but torch sees no CUDA device"
                )
            run_training(cfg, progress=args.progress)
    except (ConfigError, DataError, CheckpointError, RegistryError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # OSError: e.g. an unwritable project folder, a full disk
        return 2
    except NonFiniteLossError as exc:  # the run diverged; its message says what to try
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, RuntimeError) as exc:
        # A Ctrl-C can reach a child (a loader worker starting up) before this process, which then
        # fails with that child's death: still an interruption, not a bug.
        if isinstance(exc, RuntimeError) and not ctrl_c.seen:
            raise
        print(
            "interrupted: the last completed epoch's checkpoint (weights/last.pt) is intact; continue with "
            "--resume RUN_FOLDER",
            file=sys.stderr,
        )
        return 130
    return 0


__all__ = ["main", "parse_args"]
