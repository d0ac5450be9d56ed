"""Run the multi-object tracker and write a MOTChallenge result file.

    unified track --detections det.txt --out result.txt [--tracker-config t.yaml] [key=value ...]
    unified track --weights W --source SEQ_DIR|video --out result.txt      (model mode)
    unified track --weights W --source SEQ_DIR --out result.txt --plugins mypkg.tasks   (plugin tasks)
    unified track --weights W --source SEQ_DIR --out result.txt --save-video tracks.mp4  (needs PyAV)

Detection mode tracks a MOTChallenge detection file (``frame,-1,x,y,w,h,conf,...``; columns after the
10th, if any, are per-detection embeddings) with the tracker alone and writes
``frame,id,x,y,w,h,conf,-1,-1,-1`` rows. ``key=value`` arguments override tracker settings
(``TrackerConfig``), e.g. ``high_thresh=0.4 lost_buffer=60``. Frames are whole numbers from 1 to
2,147,483,647; the time taken follows the rows of the file, not its largest frame number.

Model mode with ``--save-video FILE`` also writes the frames with every confirmed track drawn in its
identity's colour, labelled ``id N``, with a trail through its last ``--trail`` centres (at the sequence's
``seqinfo.ini`` frame rate, a video's own, else 25).

``python tools/track.py`` is the same command.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from unified.cli import add_plugins_argument
from unified.commands import add_image_size_argument, fold_image_size
from unified.config import ConfigError, load_config
from unified.tracking import TrackerConfig
from unified.tracking.mot_io import read_mot_detections, track_frames, write_mot_results


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The flags of ``unified track`` (``tools/track.py``)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--detections", type=Path, help="MOTChallenge detection file (tracker-only mode)")
    mode.add_argument(
        "--weights", type=Path, help="unified checkpoint or exported .onnx (model mode: detect, embed, track)"
    )
    parser.add_argument("--source", help="model mode: a sequence folder (img1/ or images) or a video file")
    parser.add_argument("--out", type=Path, required=True, help="MOTChallenge result file to write")
    add_image_size_argument(parser, 640, "model mode: inference image size (alias --img-size)")
    parser.add_argument("--device", default="cpu", help="model mode: cpu, or a CUDA index such as 0")
    parser.add_argument("--tracker-config", type=Path, help="YAML with TrackerConfig fields")
    parser.add_argument(
        "--save-video", dest="save_video", type=Path, help="model mode: the tracks drawn, as a video file"
    )
    parser.add_argument("--trail", type=int, default=30, help="with --save-video: centres per trail")
    add_plugins_argument(parser, prefix="model mode: ", suffix="; key=value settings go before --plugins")
    parser.add_argument("overrides", nargs="*", help="tracker settings as key=value (e.g. high_thresh=0.4)")
    args = parser.parse_args(fold_image_size(parser, argv))
    if args.detections is not None and args.plugins:
        parser.error("--plugins belongs to model mode (--weights); the tracker alone runs no task")
    # --plugins takes every word after it, so settings written after it would be read as module paths.
    misplaced = [p for p in args.plugins if "=" in p]
    if misplaced:
        parser.error(
            f"{misplaced[0]!r} after --plugins is a setting, not a module: put key=value before --plugins"
        )
    if args.weights is not None and args.source is None:
        parser.error("--weights needs --source (a sequence folder or a video)")
    if args.detections is not None and args.source is not None:
        parser.error("--source belongs to model mode (--weights); --detections already gives the input")
    if args.detections is not None and args.save_video is not None:
        parser.error("--save-video belongs to model mode (--weights): detection mode has no images")
    if args.trail < 1:
        parser.error(f"--trail must be at least 1, got {args.trail}")
    return args


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``unified track``; returns the exit code (2: a mistake in the input)."""
    args = parse_args(argv, prog)
    try:
        config = load_config(TrackerConfig, args.tracker_config, overrides=args.overrides)
    except ConfigError as exc:
        print(f"error: tracker config: {exc}", file=sys.stderr)
        return 2
    if args.weights is not None:
        return track_with_model(args, config)
    try:
        frames = read_mot_detections(args.detections)
        results = list(track_frames(frames, config))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_mot_results(args.out, results)
    tracks = {t.track_id for _, active in results for t in active}
    rows = sum(len(active) for _, active in results)
    # Empty frames after the last track is gone are skipped, not yielded: the sequence runs to the last frame.
    length = frames[-1].frame if frames else 0
    print(f"{args.detections}: {length} frames, {len(tracks)} tracks, {rows} rows -> {args.out}")
    return 0


# -- model mode (unified.inference) -------------------------------------------------------------------------
def track_with_model(args: argparse.Namespace, config: TrackerConfig) -> int:
    """Model mode: detect (and embed, with a ``jde`` model) every frame of ``--source``, track, write MOT rows.

    The work is ``unified.inference.track_source``.
    """
    from unified.checkpoint import CheckpointError
    from unified.commands import check_image_size
    from unified.distributed import select_device
    from unified.inference import SourceError
    from unified.inference.onnx_backend import check_onnx_size, load_model
    from unified.registry import RegistryError

    try:
        device = select_device(getattr(args, "device", "cpu"))  # callers' Namespaces from before --device
    except ValueError as exc:  # a --device the machine lacks, or a malformed one
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        model = load_model(args.weights, device=device, plugins=args.plugins).for_inference()  # .onnx too
        check_image_size(model, args.img)
        check_onnx_size(model, args.img)
        results = run_tracking(model, args, config, device)
    # ImportError: a missing optional dependency (MissingDependencyError) or a --plugins module that does
    # not import; RegistryError: a task of the checkpoint that no imported module registers.
    except (CheckpointError, ConfigError, SourceError, ImportError, RegistryError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_mot_results(args.out, results)
    tracks = {t.track_id for _, active in results for t in active}
    video = f" and {args.save_video}" if getattr(args, "save_video", None) else ""
    print(f"{args.source}: {len(results)} frames, {len(tracks)} tracks -> {args.out}{video}")
    return 0


def run_tracking(model: Any, args: argparse.Namespace, config: TrackerConfig, device: Any) -> list:
    """Track ``--source``; with ``--save-video``, draw every frame's tracks into the video as it goes."""
    from unified.inference import TrackDrawer, VideoWriter, track_source_frames

    save_video = getattr(args, "save_video", None)  # callers' Namespaces from before --save-video
    results, drawer, writer = [], TrackDrawer(getattr(args, "trail", 30)), None
    try:
        for frame, tracks in track_source_frames(model, args.source, config, img_size=args.img, device=device):
            results.append((int(frame.frame or 0), tracks))
            if save_video is None:
                continue
            drawn = drawer.draw(frame.image, tracks)
            if writer is None:
                writer = VideoWriter(save_video, frame_rate(args.source, frame.fps), drawn.size)
            writer.write(drawn)
    finally:
        if writer is not None:
            writer.close()
    return results


def frame_rate(source: str | Path, video_fps: float | None) -> float:
    """A sequence folder's ``seqinfo.ini`` frame rate, else the video's own, else 25."""
    import configparser

    ini = Path(source) / "seqinfo.ini"
    if ini.is_file():
        parser = configparser.ConfigParser()
        with contextlib.suppress(configparser.Error, OSError, ValueError, KeyError):
            parser.read_string(ini.read_text())
            return float(parser["Sequence"].get("frameRate", "25"))
    return video_fps or 25.0


__all__ = ["frame_rate", "main", "parse_args", "run_tracking", "track_with_model"]
