"""Export a unified model to ONNX (fused, decode in the graph, dynamic batch) and check it in onnxruntime.

    unified export --weights best.pt --img 640 640 --out best.onnx

Outputs, in order: ``decoded`` (B, N, 5 + nc) xywh in input pixels with objectness and class scores, then
each task's own (``Task.export_outputs``): ``jdc_scores`` (B, L), ``jde_embeddings`` (B, N, D),
``segment_coefficients`` (B, N, P) with ``segment_protos`` (B, P, Hp, Wp), ``pose_keypoints`` (B, N, K, 3),
the per-detection ones row for row with ``decoded`` (see unified/export/onnx.py). NMS is not in the graph: run
``unified.export.onnx.postprocess_decoded(decoded, conf, iou)`` (or any NMS, score = objectness ×
class) on the output, then map boxes out of the letterbox with ``unified.ops.boxes.letterbox_to_original``.
Class names, strides and the input size are stored in the ONNX metadata.

``--end2end`` puts NMS in the graph too, as YOLOv7's ONNX Runtime end-to-end export (ONNX's own
``NonMaxSuppression``; ``--conf``, ``--iou``, ``--max-det``): two more outputs, ``detections`` (K, 7)
``[image, x1, y1, x2, y2, score, class]`` in input pixels and ``detection_rows`` (K, 3) ``[image, class,
row of decoded]`` (see unified/export/end2end.py); the selection equals ``non_max_suppression`` with
``multi_label=False``. The graph keeps its other outputs, so ``unified predict/val/track`` still run it.

``--int8`` also writes ``NAME-int8.onnx``: static int8 quantisation (QDQ, per-channel int8 weights, uint8
activations; onnxruntime's ``quantize_static``) calibrated on ``--calib-images`` letterboxed images of the
dataset's training split, every head included; then both graphs are evaluated on the validation split (the
ONNX backend and the tasks' evaluators, as ``unified val W.onnx`` does) and the drop of each task's
headline metric is printed (detect AP50, jdc mAP, jde TPR@FAR=0.01 ...). With ``--int8-exclude auto`` (the
default), a task that drops by more than ``--int8-max-drop`` gets the last convolutions feeding its
outputs kept in fp32, then every head's, and the export names them::

    unified export --weights best.pt --img 192 --int8 --data data/synthetic/dataset-all.yaml --calib-images 64

``--strip`` writes a PyTorch checkpoint for deployment instead (no ONNX, no extra needed): the EMA
weights as the model and the metadata ``unified.model.load`` reads, without the optimiser and the rest of
the training state (``unified.checkpoint.strip_checkpoint``)::

    unified export --weights runs/train/exp/weights/last.pt --strip --out deploy.pt

Needs the 'export' extra: pip install 'unified[export]' (onnx, onnxruntime).

``python tools/export.py`` is the same command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unified.checkpoint import CheckpointError, strip_checkpoint
from unified.cli import add_plugins_argument
from unified.config import ConfigError
from unified.data.validate import DataError
from unified.export.end2end import End2EndNMS
from unified.export.onnx import check_onnx, export_onnx, simplify_onnx
from unified.model import load
from unified.registry import RegistryError

#: Opsets this graph exports to faithfully (Resize semantics since 11; the TorchScript exporter's newest).
MIN_OPSET, MAX_OPSET = 11, 20


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The flags of ``unified export`` (``tools/export.py``)."""
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--weights", required=True, help="unified checkpoint")
    p.add_argument(
        "--img", type=int, nargs="+", default=[640], metavar="H W", help="input size (default 640)"
    )
    p.add_argument(
        "--out", help="ONNX file (default: the weights' name with .onnx; with --strip: NAME-stripped.pt)"
    )
    p.add_argument(
        "--strip",
        action="store_true",
        help="write a .pt for deployment instead: EMA weights and metadata, no optimiser or training state",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 11..20 (default 17)")
    p.add_argument(
        "--simplify-off", dest="simplify", action="store_false", help="skip onnxsim simplification"
    )
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the onnxruntime comparison")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest error the check accepts (1e-4)")
    p.add_argument("--raw", action="store_true", help="also output the per-level detection logits")
    p.add_argument("--no-fuse", dest="fuse", action="store_false", help="export without folding BN/implicit")
    p.add_argument(
        "--end2end",
        action="store_true",
        help="NMS in the graph too: outputs detections (K, 7) and detection_rows (K, 3)",
    )
    p.add_argument("--conf", type=float, default=0.25, help="--end2end: score threshold (0.25)")
    p.add_argument("--iou", type=float, default=0.45, help="--end2end: NMS IoU threshold (0.45)")
    p.add_argument(
        "--max-det",
        dest="max_det",
        type=int,
        default=300,
        help="--end2end: most detections per class and image",
    )
    p.add_argument("--int8", action="store_true", help="also write NAME-int8.onnx, calibrated and evaluated")
    p.add_argument("--data", help="--int8: dataset YAML (train split calibrates, val split evaluates)")
    p.add_argument(
        "--calib-images", dest="calib_images", type=int, default=64, help="--int8: calibration images (64)"
    )
    p.add_argument(
        "--int8-exclude",
        dest="int8_exclude",
        default="auto",
        help="--int8: nodes kept fp32: auto (search), none, heads, or comma-separated node names",
    )
    p.add_argument(
        "--int8-max-drop",
        dest="int8_max_drop",
        type=float,
        default=0.01,
        help="--int8: largest drop of a task's headline metric the auto search accepts (0.01)",
    )
    add_plugins_argument(p)
    args = p.parse_args(argv)
    if args.int8 and not args.data:
        p.error("--int8 needs --data DATASET.yaml (its train split calibrates, its val split measures)")
    if args.int8 and args.strip:
        p.error("--int8 quantises the ONNX graph; --strip writes a PyTorch checkpoint: choose one")
    if args.int8 and args.calib_images <= 0:
        p.error(f"--calib-images must be positive, got {args.calib_images}")
    if args.int8 and len(args.img) == 2 and args.img[0] != args.img[1]:
        p.error("--int8 calibrates and evaluates on square letterboxed images: give one --img size")
    if args.strip and args.out and Path(args.out).suffix.lower() == ".onnx":
        p.error(f"--strip writes a PyTorch checkpoint, not ONNX: give --out a .pt name, got {args.out}")
    if len(args.img) not in (1, 2):
        p.error("--img takes one size or two (height width)")
    if any(size <= 0 for size in args.img):
        p.error(f"--img sizes must be positive (multiples of the model's largest stride), got {args.img}")
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        p.error(
            f"--opset must be in {MIN_OPSET}..{MAX_OPSET}, got {args.opset}: from opset {MIN_OPSET} ONNX's Resize "
            f"matches PyTorch's upsampling; {MAX_OPSET} is the newest the TorchScript exporter writes"
        )
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``unified export``; returns the exit code (2: a mistake in the input; 1: the ONNX check failed)."""
    args = parse_args(argv, prog)
    if args.strip:
        return _strip(args.weights, args.out)
    size = (args.img[0], args.img[-1])
    out = Path(args.out) if args.out else Path(args.weights).with_suffix(".onnx")
    try:
        model = load(args.weights, plugins=args.plugins)
        if args.fuse:
            model.fuse()
        nms = End2EndNMS(args.conf, args.iou, args.max_det) if args.end2end else None
        path, names = export_onnx(
            model,
            out,
            size,
            opset=args.opset,
            raw=args.raw,
            metadata={"weights": str(args.weights)},
            end2end=nms,
        )
        print(f"exported {args.weights} -> {path} ({size[0]}x{size[1]}, dynamic batch, opset {args.opset})")
        print(f"  outputs: {', '.join(names)}")
        if args.simplify:
            print(f"  {simplify_onnx(path)}")
        if args.check:
            report = check_onnx(path, model, size, tolerance=args.tolerance, raw=args.raw, end2end=nms)
            print(f"  {report.summary()}")
            if not report.ok:
                return 1
        if args.int8:
            _int8(args, path, size[0])
    # ImportError: a missing optional dependency (MissingDependencyError) or a --plugins module that does
    # not import; RegistryError: a task of the checkpoint that no imported module registers.
    except (ConfigError, DataError, CheckpointError, ImportError, RegistryError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _int8(args: argparse.Namespace, fp32_path: Path, img_size: int) -> None:
    """``--int8``: calibrate, quantise, evaluate against the fp32 graph, keep fp32 what loses too much."""
    from unified.export.int8 import calibration_images, search_int8

    out = fp32_path.with_name(f"{fp32_path.stem}-int8.onnx")
    images = calibration_images(args.data, img_size, args.calib_images)
    print(f"int8: calibrating on {len(images)} training images of {args.data}, evaluating on its val split")
    exclude = args.int8_exclude
    if exclude not in ("auto", "none", "heads"):
        exclude = [n.strip() for n in exclude.split(",") if n.strip()]
    result = search_int8(fp32_path, out, args.data, img_size, images, args.int8_max_drop, exclude)
    kept = ", ".join(result.excluded) if result.excluded else "none"
    print(f"exported {out} (int8 QDQ, per-channel weights); kept in fp32: {kept}")
    print("  drop (fp32 - int8): " + ", ".join(f"{t} {d:+.4f}" for t, d in result.drops().items()))


def _strip(weights: str, out: str | None) -> int:
    """``--strip``: the deployment checkpoint, with the sizes before and after."""
    src = Path(weights)
    dst = Path(out) if out else src.with_name(f"{src.stem}-stripped.pt")
    try:
        strip_checkpoint(src, dst)
    except (CheckpointError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    before, after = src.stat().st_size, dst.stat().st_size
    print(
        f"stripped {src} ({before / 1e6:.1f} MB) -> {dst} ({after / 1e6:.1f} MB): weights and metadata only"
    )
    return 0


__all__ = ["MAX_OPSET", "MIN_OPSET", "main", "parse_args"]
