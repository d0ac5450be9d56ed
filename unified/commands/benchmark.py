"""Measure training and inference speed, multi-task and implicit overheads, data, tracker and memory,
inference in ONNX Runtime fp32 and int8 beside PyTorch and the official code (CPU, with the 'export'
extra), and the host's fp32 and bf16 convolution rates (what ``train.precision: auto`` decides from).

    unified benchmark                                   # full run, CPU (about 10-15 min on 2 cores)
    unified benchmark --official-repo /tmp/yolor        # + the official code side by side
    unified benchmark --device cuda --json bench.json   # on a GPU
    unified benchmark --quick                           # fewer repeats, no lever rows
    unified benchmark --tiny                            # tiny sizes (what the test suite runs)
    unified benchmark --compile                         # + torch.compile rows (slow to compile)

Prints a markdown table (the one in docs/PERFORMANCE.md) and, with --json, writes every number. Ratios
are medians of per-repeat ratios of variants timed in turns, so they hold on a busy machine; absolute
times do not. The official code (https://github.com/WongKinYiu/yolor, `paper` branch) is never part of
this project: pass your own checkout with --official-repo.

``python tools/benchmark.py`` is the same command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from unified.benchmark import PROFILES, check_result, markdown_table, run_benchmark
from unified.benchmark.official import OfficialRepoError


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The flags of ``unified benchmark`` (``tools/benchmark.py``)."""
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--json", dest="json_out", default="", help="write the results as JSON to this file")
    p.add_argument(
        "--official-repo",
        dest="official_repo",
        default="",
        help="checkout of the official YOLOR paper branch",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="full sizes, fewer repeats, no lever rows")
    size.add_argument("--tiny", action="store_true", help="tiny sizes and one repeat (tests)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile variants (minutes of compiling on a CPU)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``unified benchmark``; returns the exit code (2: a mistake in the input; 1: a measurement failed its checks)."""
    args = parse_args(argv, prog)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = PROFILES["tiny" if args.tiny else "quick" if args.quick else "full"]
    if args.compile:
        profile = dataclasses.replace(profile, compile=True)
    official = Path(args.official_repo) if args.official_repo else None
    started = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {text}", file=sys.stderr, flush=True)

    try:
        result = run_benchmark(profile, device, official, log=log)
    except OfficialRepoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result["seconds"] = time.perf_counter() - started
    problems = check_result(result)
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result))
    print(
        f"\n{result['machine']['cpu']}, {result['machine']['torch_threads']} threads, device {device}; "
        f"torch {result['versions']['torch']}; profile {profile.name}; {result['seconds']:.0f} s"
    )
    if problems:
        print("problems: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


__all__ = ["main", "parse_args"]
