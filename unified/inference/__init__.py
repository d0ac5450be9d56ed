"""Inference on files: images, folders, globs and videos in; predictions, drawings, files and tracks out.

* :mod:`unified.inference.sources`: what a ``--source`` holds, read as :class:`Frame` objects (images,
  folders, globs, videos with PyAV, image sequences).
* :mod:`unified.inference.predict`: letterbox preprocessing and batched prediction through every task's
  ``postprocess``.
* :mod:`unified.inference.writers`: drawn predictions, YOLO txt rows, COCO result records of every task,
  videos, JSON.
* :mod:`unified.inference.tracking`: model-mode tracking (detections and ``jde`` embeddings feed the tracker).

These serve the deployment tools ``tools/detect.py`` and ``tools/track.py``.
"""

from unified.inference.coco_ids import CocoIds
from unified.inference.predict import batches, predict_frames, prepare
from unified.inference.sources import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    Frame,
    MissingDependencyError,
    SourceError,
    iter_frames,
    read_video,
    resolve_source,
    sequence_frames,
)
from unified.inference.tracking import TrackDrawer, track_source, track_source_frames
from unified.inference.writers import (
    VideoWriter,
    detection_arrays,
    draw_predictions,
    image_fields,
    instance_records,
    write_json,
    yolo_lines,
)

__all__ = [
    "CocoIds",
    "TrackDrawer",
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "Frame",
    "MissingDependencyError",
    "SourceError",
    "VideoWriter",
    "batches",
    "detection_arrays",
    "draw_predictions",
    "image_fields",
    "instance_records",
    "iter_frames",
    "predict_frames",
    "prepare",
    "read_video",
    "resolve_source",
    "sequence_frames",
    "track_source",
    "track_source_frames",
    "write_json",
    "yolo_lines",
]
