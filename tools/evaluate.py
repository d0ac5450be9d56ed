"""Evaluate tracker outputs (MOT metrics) or, later, a trained model on its tasks.

    python tools/evaluate.py --mot-gt GT_ROOT --mot-results RESULTS_ROOT [--json OUT] [--sequences a,b]
    python tools/evaluate.py --weights W ...                                   (model mode)

MOT mode scores ``RESULTS_ROOT/<seq>.txt`` against ``GT_ROOT/<seq>/gt/gt.txt`` for every sequence of
GT_ROOT (or those named by --sequences) with motmetrics' MOTChallenge settings, and prints one row per
sequence and an OVERALL row (MOTA, MOTP as mean 1-IoU, IDF1, IDP, IDR, ID switches, MT, ML, FP, FN).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unified.evaluation.mot import evaluate_mot_files, format_mot_table  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--mot-gt", type=Path, help="MOT mode: folder holding <seq>/gt/gt.txt")
    mode.add_argument("--weights", type=Path, help="model mode: a unified checkpoint to evaluate")
    parser.add_argument("--mot-results", type=Path, help="MOT mode: folder holding <seq>.txt result files")
    parser.add_argument("--sequences", help="MOT mode: comma-separated sequences (default: all in --mot-gt)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    if args.mot_gt is not None and args.mot_results is None:
        parser.error("--mot-gt needs --mot-results")
    if args.weights is not None and (args.mot_results is not None or args.sequences is not None):
        parser.error("--mot-results and --sequences belong to MOT mode (--mot-gt)")
    return args


def run_model_mode(args: argparse.Namespace) -> dict:
    """Evaluate a checkpoint on its tasks' validation data (wired by the engine side)."""
    raise NotImplementedError(
        "tools/evaluate.py --weights (model mode) is not wired yet; score tracker outputs with --mot-gt"
    )


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # NaN (an undefined metric) is not JSON: write null instead.
    clean = json.loads(json.dumps(payload), parse_constant=lambda _: None)
    path.write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.weights is not None:
        try:
            payload = run_model_mode(args)
        except NotImplementedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        sequences = [s.strip() for s in args.sequences.split(",") if s.strip()] if args.sequences else None
        try:
            payload = evaluate_mot_files(args.mot_gt, args.mot_results, sequences)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(format_mot_table(payload))
    if args.json is not None:
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
