"""Evaluate a trained model on its tasks, or tracker outputs alone (MOT metrics).

    unified val --weights W --data DATASET.yaml [--tasks detect,jdc] [--img 256] [--json OUT]
    unified val --weights W.onnx --data DATASET.yaml     (an exported graph, fp32 or int8, in onnxruntime)
                [--plugins mypkg.tasks]       (a checkpoint trained with plugin tasks)
    unified val --mot-gt GT_ROOT --mot-results RESULTS_ROOT [--json OUT] [--sequences a,b]

Model mode runs the checkpoint over a split of the dataset (``val`` by default), prints every task's metrics,
writes the metrics as JSON (``--json``, default ``OUT/metrics.json``; ``detect`` AP/AP50/..., ``segment``
mask AP/AP50/AP75, ``pose`` keypoint AP/AP50, ...) and writes every task's plots and predictions into
``--out`` (default: the run folder of the weights): ``PR_curve.png``, ``F1_curve.png``,
``confusion_matrix.png``, ``AP_per_class.png``, ``jdc_AP_per_label.png``, ``jde_TPR_FAR_curve.png``,
``segment_PR_curve.png``, ``pose_PR_curve.png``, ``val_batch0_labels.jpg`` beside ``val_batch0_pred.jpg``,
and the COCO results JSON of the tasks that write one.

MOT mode scores ``RESULTS_ROOT/<seq>.txt`` against ``GT_ROOT/<seq>/gt/gt.txt`` for every sequence of
GT_ROOT (or those named by --sequences) with motmetrics' MOTChallenge settings, and prints one row per
sequence and an OVERALL row (MOTA, MOTP as mean 1-IoU, IDF1, IDP, IDR, ID switches, MT, ML, FP, FN).
``python tools/evaluate.py`` is the same command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unified.cli import add_plugins_argument
from unified.commands import add_image_size_argument, fold_image_size
from unified.evaluation.mot import evaluate_mot_files, format_mot_table


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The flags of ``unified val`` (``tools/evaluate.py``)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--mot-gt", type=Path, help="MOT mode: folder holding <seq>/gt/gt.txt")
    mode.add_argument(
        "--weights", type=Path, help="model mode: a unified checkpoint, or an .onnx from unified export"
    )
    parser.add_argument("--mot-results", type=Path, help="MOT mode: folder holding <seq>.txt result files")
    parser.add_argument("--sequences", help="MOT mode: comma-separated sequences (default: all in --mot-gt)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    parser.add_argument("--data", type=Path, help="model mode: dataset YAML")
    parser.add_argument("--split", default="val", help="model mode: split to evaluate (default val)")
    parser.add_argument("--tasks", help="model mode: comma-separated tasks to evaluate (default: all)")
    add_image_size_argument(parser, 0, "model mode: image size (alias --img-size; default: training size)")
    parser.add_argument("--batch-size", type=int, default=16, help="model mode: images per batch")
    parser.add_argument("--device", default="cpu", help="model mode: cpu or a GPU index")
    parser.add_argument("--workers", type=int, default=2, help="model mode: data loading workers")
    parser.add_argument("--out", type=Path, help="model mode: folder for plots and JSON")
    add_plugins_argument(parser, prefix="model mode: ")
    args = parser.parse_args(fold_image_size(parser, argv))
    if args.weights is not None and args.data is None:
        parser.error("--weights needs --data DATASET.yaml")
    if args.mot_gt is not None and args.mot_results is None:
        parser.error("--mot-gt needs --mot-results")
    if args.weights is not None and (args.mot_results is not None or args.sequences is not None):
        parser.error("--mot-results and --sequences belong to MOT mode (--mot-gt)")
    if args.mot_gt is not None and args.plugins:
        parser.error("--plugins belongs to model mode (--weights)")
    return args


def run_model_mode(args: argparse.Namespace) -> dict:
    """Evaluate a checkpoint on a dataset split; returns the per-task metrics."""
    from unified.checkpoint import load_safe
    from unified.commands import check_image_size
    from unified.distributed import select_device
    from unified.engine.evaluate import evaluate_dataset, training_image_size
    from unified.engine.launch import print_metrics_table
    from unified.inference.onnx_backend import check_onnx_size, is_onnx, load_model

    device = select_device(args.device)
    # Unfused: the metrics of the checkpoint itself, not of its folded copy. An .onnx runs in onnxruntime.
    model = load_model(args.weights, device=device, plugins=args.plugins).for_inference(fuse=False)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else list(model.tasks)
    unknown = [t for t in tasks if t not in model.tasks]
    if unknown:
        raise ValueError(f"--tasks {unknown}: {args.weights} has the tasks {list(model.tasks)}")
    if is_onnx(args.weights):
        img = args.img or onnx_image_size(model, args.weights)
        check_onnx_size(model, img)
        print(f"{args.weights}: ONNX graph ({model.precision}) run by onnxruntime on the CPU")
    else:
        img = args.img or training_image_size(load_safe(args.weights))
    check_image_size(model, img)
    out = args.out or (
        args.weights.parent.parent if args.weights.parent.name == "weights" else Path("runs/evaluate")
    )
    metrics = evaluate_dataset(
        model,
        args.data,
        args.split,
        img,
        args.batch_size,
        args.workers,
        device,
        tasks=tasks,
        plot_dir=out,
        model_name=str(args.weights),
    )
    print(print_metrics_table(metrics))
    print(f"plots and predictions written to {out}")
    if args.json is None:
        args.json = out / "metrics.json" if args.out else None
    return metrics


def onnx_image_size(model: object, weights: Path) -> int:
    """The square size an ONNX graph was exported at (evaluation letterboxes to a square).

    Raises:
        ValueError: for a graph exported at a size that is not square.
    """
    height, width = model.img_size  # type: ignore[attr-defined]
    if height != width:
        raise ValueError(
            f"{weights} was exported at {height}x{width}; evaluation letterboxes to a square: export it at "
            f"--img {max(height, width)}"
        )
    return int(height)


def write_json(path: Path, payload: dict) -> None:
    """Write the metrics as the training run writes its metrics.json (an undefined metric is null)."""
    from unified.engine.results import write_json as write_results

    write_results(path, payload)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``unified val``; returns the exit code (2: a mistake in the input)."""
    args = parse_args(argv, prog)
    if args.weights is not None:
        from unified.checkpoint import CheckpointError
        from unified.config import ConfigError
        from unified.data.validate import DataError
        from unified.registry import RegistryError

        # ImportError: a --plugins module that does not import; RegistryError: a task of the checkpoint
        # that no imported module registers.
        expected = (ConfigError, DataError, CheckpointError, ImportError, RegistryError, ValueError, OSError)
        try:
            payload = run_model_mode(args)
        except expected as exc:
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


__all__ = ["main", "onnx_image_size", "parse_args", "run_model_mode", "write_json"]
