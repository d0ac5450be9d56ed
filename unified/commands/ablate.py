"""Run a named ablation study: each variant with several seeds at a fixed budget, reported with error bars.

    unified ablate --list                                  # the studies and their variants
    unified ablate --study paper                           # every variant x 3 seeds, one run after another
    unified ablate --study paper --dry-run                 # the runs' commands and overrides, nothing run
    unified ablate --study paper --seeds 5 --epochs 12 --img 192 --out runs/ablation/paper-long
    unified ablate --study paper --only baseline +refine-mul
    CUDA_VISIBLE_DEVICES=1 unified ablate --study paper --shard 1/4     # one of four processes (GPUs, machines)
    unified ablate --study paper --report-only             # tables and plot from whatever has finished

Each run is ``unified train`` in its own folder ``OUT/runs/<variant>/seed<k>`` (``train.seed=k``, a fixed
number of epochs, no time budget), then ``unified val`` of its last weights on the validation split of the
base world made with an unseen seed. Started again, the study skips finished runs, resumes runs that have a
checkpoint and restarts the others. ``OUT/ablation.csv``, ``ablation.md`` and ``ablation.png`` hold each
metric's mean ± standard deviation per variant and its difference from the reference variant, paired by seed,
with a 95 % t interval. ``key.sub=value`` after the flags overrides every variant's experiment
(``model.head.X=v`` the model YAML's). ``python tools/ablate.py`` is the same command; docs/ABLATION.md
describes the studies.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from unified.commands import add_image_size_argument, fold_image_size


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The flags of ``unified ablate`` (``tools/ablate.py``)."""
    from unified.ablation.studies import DEFAULT_STUDY

    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--study", default=DEFAULT_STUDY, help=f"the study to run (default {DEFAULT_STUDY}; --list)"
    )
    p.add_argument("--list", action="store_true", help="list the studies and their variants, then exit")
    p.add_argument("--seeds", type=int, default=3, help="runs per variant, seeds 0..N-1 (default 3)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the study's)")
    add_image_size_argument(p, None, "training and evaluation image size (default: the study's)")
    p.add_argument("--out", type=Path, help="the study folder (default runs/ablation/STUDY)")
    p.add_argument("--only", nargs="+", metavar="VARIANT", help="run only these variants")
    p.add_argument("--base", help="another base experiment than the study's (a YAML or a packaged name)")
    p.add_argument("--device", help="every run's device: cpu, 0, ... (default: automatic)")
    p.add_argument("--workers", type=int, help="every run's data loading workers")
    p.add_argument(
        "--unseen-seed",
        type=int,
        help="seed of the world the runs are evaluated on (default: the training world's seed + 1)",
    )
    p.add_argument(
        "--no-unseen",
        action="store_true",
        help="score the runs on the training world's validation split only",
    )
    p.add_argument(
        "--shard", metavar="I/N", help="run only the jobs j with j %% N == I (one process per GPU)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the runs' commands and overrides; run nothing"
    )
    p.add_argument("--report-only", action="store_true", help="write the report from the finished runs only")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run each job in this process (no interpreter start per run) instead of a child process",
    )
    p.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = p.parse_args(fold_image_size(p, argv))
    if args.only:  # `--only a b key=v`: the overrides after the variants are overrides
        args.overrides = [*(o for o in args.only if "=" in o), *args.overrides]
        args.only = [o for o in args.only if "=" not in o]
    return args


def list_studies() -> str:
    """What ``--list`` prints: every study, its budget and its variants with their overrides."""
    from unified.ablation.studies import STUDIES

    lines = []
    for name in STUDIES.names():
        study = STUDIES.get(name)
        lines += [
            f"{name}: {study.description}",
            f"  base {study.base}, {study.epochs} epochs at {study.img_size}²",
        ]
        for variant in study.variants:
            reference = study.reference_of(variant)
            against = f" (vs {reference})" if reference else " (reference)"
            lines.append(f"  {variant.name}{against}: {' '.join(variant.overrides) or '(the base as it is)'}")
        lines.append("")
    return "\n".join(lines).rstrip()


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``unified ablate``; returns the exit code (2: a mistake in the input or an invalid variant, before
    anything runs; 1: some runs failed; 130: Ctrl-C, resumable by the same command)."""
    from unified.ablation.plan import StudyError
    from unified.config import ConfigError
    from unified.registry import RegistryError

    args = parse_args(argv, prog)
    if args.list:
        print(list_studies())
        return 0
    try:
        return _ablate(args)
    except (StudyError, ConfigError, RegistryError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _ablate(args: argparse.Namespace) -> int:
    from unified.ablation.plan import Budget, StudyError, parse_shard, plan_jobs, shard_jobs
    from unified.ablation.report import write_report
    from unified.ablation.runner import (
        check_study_folder,
        comparable_config,
        in_process_launcher,
        run_jobs,
        subprocess_launcher,
        unseen_world,
    )
    from unified.ablation.studies import STUDIES

    if args.study not in STUDIES:
        close = difflib.get_close_matches(args.study, STUDIES.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise StudyError(
            f"--study {args.study!r}: no such study{hint}; studies: {', '.join(STUDIES.names())}"
        )
    study = STUDIES.get(args.study)
    out: Path = args.out or Path("runs") / "ablation" / study.name
    if args.report_only:
        _print_report(write_report(out, study))
        return 0
    budget = Budget(args.epochs or study.epochs, args.img or study.img_size, args.seeds)
    shard = parse_shard(args.shard) if args.shard else None
    flags = [f"train.device={args.device}"] if args.device is not None else []
    flags += [f"train.workers={args.workers}"] if args.workers is not None else []
    jobs = plan_jobs(study, out, budget, args.only or (), [*flags, *args.overrides], args.base)
    world = None
    if not args.no_unseen and jobs and jobs[0].config.synthetic is not None:
        seed = args.unseen_seed if args.unseen_seed is not None else jobs[0].config.synthetic.seed + 1
        world = unseen_world(jobs[0], out, seed)
    elif not args.no_unseen:
        print(
            "note: the base experiment has no synthetic world: runs are scored on its validation split only"
        )
    mine = shard_jobs(jobs, shard)
    if args.dry_run:
        _print_plan(mine, len(jobs), world, args.device or "")
        return 0
    check_study_folder(
        out,
        study,
        budget,
        world.seed if world else None,
        sorted({j.variant for j in jobs}),
        args.overrides,
        {j.variant: comparable_config(j) for j in jobs if j.seed == 0},
    )
    launcher = in_process_launcher if args.in_process else subprocess_launcher
    outcomes = run_jobs(mine, launcher, world, args.device or "")
    _print_report(write_report(out, study))
    failed = [o for o in outcomes if o.status == "failed"]
    for outcome in failed:
        print(f"failed: {outcome.job.variant} seed {outcome.job.seed}: {outcome.message}", file=sys.stderr)
    if any(o.status == "interrupted" for o in outcomes):
        print("interrupted: run the same command again to resume the study where it stopped", file=sys.stderr)
        return 130
    return 1 if failed else 0


def _print_plan(jobs: list, total: int, world: object, device: str) -> None:
    from unified.ablation.plan import JOB_CONFIG
    from unified.ablation.runner import UNSEEN_DIR

    print(f"{len(jobs)} of {total} runs" + (f"; scored on {world.data}" if world is not None else ""))
    for job in jobs:
        print(f"[{job.index}] {job.variant} seed {job.seed}: {job.run_dir}")
        print(f"    unified train --config {job.run_dir / JOB_CONFIG} --no-progress")
        print(f"    overrides: {' '.join(job.overrides)}")
        if world is not None:
            print(
                f"    unified val --weights {job.run_dir / 'weights' / 'last.pt'} --data {world.data} "
                f"--out {job.run_dir / UNSEEN_DIR} --device '{device}'"
            )


def _print_report(paths: list[Path]) -> None:
    print("report: " + ", ".join(str(p) for p in paths))


__all__ = ["list_studies", "main", "parse_args"]
