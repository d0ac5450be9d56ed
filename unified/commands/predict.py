"""Run a unified model on images, folders, globs or videos and save what it sees.

    unified predict --weights best.pt --source photo.jpg
    unified predict --weights best.pt --source 'data/**/*.png' --save-txt --save-json
    unified predict --weights best.pt --source clip.mp4 --save-embeddings       (video needs PyAV)

Writes into --out (default runs/detect/exp, numbered when it exists):

* ``NAME.ext`` annotated images (``VIDEO.mp4`` for a video): every task draws its prediction (boxes,
  masks, keypoints, image labels ...);
* ``labels/NAME.txt`` with --save-txt: YOLO rows ``class cx cy w h conf`` normalised to the original image;
* ``predictions.json`` with --save-json: the COCO results format, one record per detection with
  ``image_id``, ``file_name``, ``category_id``, ``bbox`` = ``[x, y, w, h]`` in original pixels, ``score``,
  and what the other tasks add (``segment``: ``segmentation`` as a compressed RLE; ``pose``:
  ``keypoints`` ``[x, y, score] * K``), and ``categories.json`` (category id -> name). With
  ``--coco-json FILE`` (the source's COCO annotations) the ids are that file's (image by ``file_name``,
  category by name), so pycocotools scores the file as it is; without it an image named by a number
  (COCO's ``000000397133.jpg``) has that number as ``image_id``, any other its running index, and
  ``category_id`` is the class index;
* ``image_labels.json`` with --save-labels (models with a task about the whole image, e.g. ``jdc``): per
  image that task's fields (``jdc``: the labels above its threshold and every label's score);
* ``KEY/NAME.npy`` with --save-arrays (alias --save-embeddings; models with a task of per-detection arrays,
  e.g. ``jde``'s ``embeddings``): one row per detection, in the order of ``labels/NAME.txt``.

``python tools/detect.py`` is the same command.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from unified.checkpoint import CheckpointError
from unified.cli import add_plugins_argument
from unified.commands import add_image_size_argument, fold_image_size
from unified.config import ConfigError
from unified.distributed import select_device
from unified.engine.launch import increment_path
from unified.inference import (
    CocoIds,
    Frame,
    SourceError,
    VideoWriter,
    detection_arrays,
    draw_predictions,
    image_fields,
    instance_records,
    iter_frames,
    predict_frames,
    write_json,
    yolo_lines,
)
from unified.inference.onnx_backend import check_onnx_size, load_model
from unified.registry import RegistryError
from unified.task import TASKS


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The flags of ``unified predict`` (``tools/detect.py``)."""
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--weights",
        required=True,
        help="unified checkpoint (convert official ones first), or an exported .onnx",
    )
    p.add_argument("--source", required=True, help="image, folder, glob pattern or video")
    add_image_size_argument(p, 640, "inference size (square letterbox; alias --img-size), default 640")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold, default 0.25")
    p.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold, default 0.45")
    p.add_argument("--max-det", dest="max_det", type=int, default=300, help="most detections per image")
    p.add_argument("--device", default="cpu", help="cpu, or a CUDA index such as 0")
    p.add_argument("--batch", type=int, default=8, help="images per forward pass")
    p.add_argument("--out", default="runs/detect/exp", help="output folder (numbered if it exists)")
    p.add_argument("--exist-ok", dest="exist_ok", action="store_true", help="write into an existing --out")
    p.add_argument("--save-txt", dest="save_txt", action="store_true", help="YOLO txt per image")
    p.add_argument("--save-json", dest="save_json", action="store_true", help="COCO-style predictions.json")
    p.add_argument(
        "--coco-json",
        dest="coco_json",
        default=None,
        help="the source's COCO annotations: predictions.json takes their image and category ids",
    )
    p.add_argument(
        "--save-labels", dest="save_labels", action="store_true", help="image-level outputs (jdc labels)"
    )
    p.add_argument(
        "--save-arrays",
        "--save-embeddings",
        dest="save_arrays",
        action="store_true",
        help="per-detection arrays as .npy (jde embeddings)",
    )
    p.add_argument("--no-save-img", dest="save_img", action="store_false", help="no annotated images")
    p.add_argument("--no-fuse", dest="fuse", action="store_false", help="do not fold BN / implicit tensors")
    add_plugins_argument(p)
    args = p.parse_args(fold_image_size(p, argv))
    if args.img < 32 or args.img % 32:
        p.error(f"--img must be a positive multiple of 32, got {args.img}")
    if args.coco_json and not args.save_json:
        p.error("--coco-json gives the ids of predictions.json: add --save-json")
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``unified predict``; returns the exit code (2: a mistake in the input)."""
    args = parse_args(argv, prog)
    try:
        device = select_device(args.device)
    except ValueError as exc:  # a --device the machine lacks, or a malformed one
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        model = load_model(args.weights, device=device, plugins=args.plugins)  # .onnx: onnxruntime
        check_onnx_size(model, args.img)
        check_outputs_wanted(args, model)
        if "detect" not in model.tasks:
            raise ConfigError(
                f"--weights {args.weights}: predict needs the detect task; this model has {model.task_names}"
            )
        detect = model.tasks["detect"]
        detect.cfg = dataclasses.replace(
            detect.cfg, conf_thres=args.conf, iou_thres=args.iou, max_det=args.max_det, multi_label=False
        )
        model.for_inference(fuse=args.fuse)
        args.coco_ids = (
            CocoIds.from_annotations(args.coco_json, model.info.class_names) if args.coco_json else CocoIds()
        )
        out = increment_path(Path(args.out), args.exist_ok)
        out.mkdir(parents=True, exist_ok=True)
        count = run(model, args, out, device)
    # ImportError: a missing optional dependency (MissingDependencyError) or a --plugins module that does
    # not import; RegistryError: a task of the checkpoint that no imported module registers.
    except (ConfigError, CheckpointError, SourceError, ImportError, RegistryError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{count} images -> {out}")
    return 0


def check_outputs_wanted(args: argparse.Namespace, model: torch.nn.Module) -> None:
    """A --save-* flag for outputs that no task of the model gives is a mistake, said before any work."""
    wanted = (
        ("--save-labels", args.save_labels, lambda task: task.image_keys),
        ("--save-arrays", args.save_arrays, lambda task: task.array_keys),
    )
    for flag, asked, keys_of in wanted:
        if asked and not any(keys_of(task) for task in model.tasks.values()):
            givers = [name for name in TASKS.names() if keys_of(TASKS.get(name))]
            raise ConfigError(
                f"{flag} needs a model with a task that gives them (registered: {givers}); "
                f"this one has {model.task_names}"
            )


def run(model: torch.nn.Module, args: argparse.Namespace, out: Path, device: torch.device) -> int:
    """Predict over the source and write every requested output; returns the number of images."""
    names = model.info.class_names
    collected: dict[str, dict] = {"results": {}, "image_labels": {}}
    videos: dict[str, VideoWriter] = {}
    skipped: list[str] = []  # undecodable images: named as they are met, counted at the end
    count = 0
    start = time.perf_counter()
    try:
        for frame, predictions in predict_frames(
            model, iter_frames(args.source, skipped), args.img, args.batch, device
        ):
            count += 1
            det = predictions["detect"]
            found = np.bincount(det["classes"].numpy(), minlength=len(names)) if len(det["classes"]) else []
            summary = ", ".join(f"{n} {names[c]}" for c, n in enumerate(found) if n) or "nothing"
            print(f"{frame.path}{f' frame {frame.frame}' if frame.is_video else ''}: {summary}")
            write_frame(model, args, out, frame, predictions, videos, collected)
    finally:
        for writer in videos.values():
            writer.close()
    if args.save_json:
        write_json(out / "predictions.json", [r for rows in collected["results"].values() for r in rows])
        categories = [{"id": args.coco_ids.category_id(i), "name": n} for i, n in enumerate(names)]
        write_json(out / "categories.json", categories)
    if args.save_labels:
        write_json(out / "image_labels.json", collected["image_labels"])
    elapsed = time.perf_counter() - start
    if count:
        print(f"{elapsed / count * 1000:.1f} ms per image (including reading and writing)")
    if skipped:
        print(
            f"warning: skipped {len(skipped)} image(s) that could not be decoded: {skipped[0]}",
            file=sys.stderr,
        )
        if not count:
            raise SourceError(f"{args.source}: none of its {len(skipped)} image(s) could be decoded")
    return count


def write_frame(
    model: torch.nn.Module,
    args: argparse.Namespace,
    out: Path,
    frame: Frame,
    predictions: dict,
    videos: dict[str, VideoWriter],
    collected: dict[str, dict],
) -> None:
    """Write one frame's outputs (picture, txt, arrays) and collect what goes into the JSON files."""
    if args.save_img:
        drawn = draw_predictions(model, frame.image, predictions)
        if frame.is_video:
            writer = videos.get(frame.path)
            if writer is None:
                target = out / f"{Path(frame.path).stem}.mp4"
                writer = videos[frame.path] = VideoWriter(target, frame.fps or 25.0, drawn.size)
            writer.write(drawn)
        else:
            drawn.save(out / Path(frame.path).name)
    if args.save_txt:
        lines = yolo_lines(predictions["detect"], frame.image.shape[:2])
        (out / "labels").mkdir(exist_ok=True)
        (out / "labels" / f"{frame.name}.txt").write_text("".join(f"{line}\n" for line in lines))
    if args.save_json:
        records = instance_records(model, frame, predictions)
        collected["results"][frame.name] = args.coco_ids.apply(frame, records)
    if args.save_labels:
        collected["image_labels"][frame.name] = image_fields(model, predictions)
    if args.save_arrays:
        for key, array in detection_arrays(model, predictions).items():
            (out / key).mkdir(exist_ok=True)
            np.save(out / key / f"{frame.name}.npy", array)


__all__ = ["check_outputs_wanted", "main", "parse_args", "run", "write_frame"]
