"""The Python API: :class:`Model` (build or load, train, validate, predict, track, export) and :class:`Result`.

    from unified import Model

    model = Model("yolor-tiny", tasks=["detect", "jdc", "jde"])   # a packaged model by name, or a YAML
    run = model.train(data="data.yaml", epochs=30, imgsz=320, batch=16, device="cpu")
    metrics = model.val(data="data.yaml")                            # {"detect": {...}, "jdc": {...}, ...}
    for result in model.predict("images/", conf=0.25):
        print(result.boxes.xyxy, result.boxes.conf, result.boxes.cls, result.image_fields)
        result.save(f"out/{result.name}.jpg")
    model.export(format="onnx")

Every method runs the library code behind the matching command (``unified train`` ... ``unified export``): the
launcher of a training run (so ``train`` works under torchrun as ``unified train`` does), the evaluation loop,
the inference pipeline, the tracker and the ONNX exporter. What a :class:`Result` holds beyond the boxes comes
from each task's presentation methods (``Task.instance_fields``, ``Task.image_fields``, ``Task.arrays``,
``Task.draw``), so the outputs of a plugin task arrive as those of the built-in ones do.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from unified.checkpoint import load_safe
from unified.config import load_config, to_dict
from unified.distributed import select_device
from unified.engine.evaluate import evaluate_dataset, training_image_size
from unified.engine.experiment import load_experiment, set_aside_tasks_left_out
from unified.engine.hooks import Hook
from unified.engine.launch import flags_to_overrides, run_training
from unified.inference import (
    CocoIds,
    Frame,
    detection_arrays,
    draw_predictions,
    image_fields,
    instance_records,
    iter_frames,
    predict_frames,
    track_source,
)
from unified.inference.onnx_backend import is_onnx, load_model
from unified.model import UnifiedModel, build_model
from unified.models import load_model_config
from unified.packaged_configs import resolve_config
from unified.task import ImagePredictions, resolve_tasks
from unified.tracking import TrackerConfig
from unified.tracking.tracker import TrackedObject

#: File suffixes read as checkpoints; anything else is a model YAML or a packaged model's name.
CHECKPOINT_SUFFIXES = (".pt", ".pth")
#: The image size of a model that was never trained (the tools' default).
DEFAULT_IMG_SIZE = 640

#: What ``predict`` accepts: a path (image, folder, glob, video), RGB arrays or PIL images.
Source = str | Path | np.ndarray | Image.Image | Sequence[np.ndarray | Image.Image]


class TrainRun(NamedTuple):
    """What :meth:`Model.train` returns: the run folder and the final metrics per task."""

    run_dir: Path
    metrics: dict[str, dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Boxes:
    """One image's kept detections in original-image pixels (``detect``'s prediction, on every model).

    Attributes:
        xyxy: ``(N, 4)`` float32 corners ``x1, y1, x2, y2``.
        conf: ``(N,)`` float32 scores.
        cls: ``(N,)`` int64 class indices (names in :attr:`Result.names`).
    """

    xyxy: np.ndarray
    conf: np.ndarray
    cls: np.ndarray

    @classmethod
    def from_prediction(cls, detections: dict[str, Any]) -> Boxes:
        """From ``detect``'s per-image dict (``boxes``, ``scores``, ``classes`` tensors)."""
        return cls(
            xyxy=detections["boxes"].numpy().astype(np.float32).reshape(-1, 4),
            conf=detections["scores"].numpy().astype(np.float32),
            cls=detections["classes"].numpy().astype(np.int64),
        )

    @property
    def xywh(self) -> np.ndarray:
        """``(N, 4)`` centre x, centre y, width, height."""
        wh = self.xyxy[:, 2:] - self.xyxy[:, :2]
        return np.concatenate([self.xyxy[:, :2] + wh / 2, wh], axis=1)

    def __len__(self) -> int:
        return len(self.conf)


class Result:
    """One image's predictions of every task, in original-image pixels.

    Attributes:
        path: The file the image came from (``imageN`` for an array).
        name: Its stem (``clip_000012`` for frame 12 of ``clip.mp4``).
        frame: The 1-based frame of a video, else ``None``.
        image: The original ``(h, w, 3)`` uint8 RGB image.
        orig_shape: ``(h, w)``.
        names: Class index -> name.
        boxes: The kept detections (:class:`Boxes`).
        predictions: Every task's raw per-image dict, keyed by task name (tensors on the CPU).
    """

    def __init__(self, frame: Frame, predictions: ImagePredictions, model: UnifiedModel) -> None:
        self._frame, self._model = frame, model
        self.path, self.name, self.frame = frame.path, frame.name, frame.frame
        self.image = frame.image
        self.orig_shape: tuple[int, int] = tuple(frame.image.shape[:2])
        self.names: dict[int, str] = dict(enumerate(model.info.class_names))
        self.predictions = predictions
        self.boxes = Boxes.from_prediction(predictions["detect"])

    @cached_property
    def records(self) -> list[dict[str, Any]]:
        """One COCO-style result record per detection: ``category_id``, ``bbox`` ``[x, y, w, h]``, ``score``
        and what the other tasks add (``segmentation`` RLE, ``keypoints`` ...), as ``predictions.json``."""
        return CocoIds().apply(self._frame, instance_records(self._model, self._frame, self.predictions))

    @cached_property
    def image_fields(self) -> dict[str, Any]:
        """Every task's outputs about the whole image (``jdc``: ``labels`` over its threshold, ``scores``)."""
        return image_fields(self._model, self.predictions)

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        """Every task's per-detection arrays, row for row with :attr:`boxes` (``jde``: ``embeddings``)."""
        return detection_arrays(self._model, self.predictions)

    def plot(self) -> np.ndarray:
        """The image with every task's prediction drawn on it, as ``unified predict`` draws it (RGB uint8)."""
        return np.asarray(draw_predictions(self._model, self.image, self.predictions))

    def save(self, path: str | Path) -> Path:
        """Write :meth:`plot` to ``path`` (the format from its suffix); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(self.plot()).save(path)
        return path

    def __len__(self) -> int:
        return len(self.boxes)

    def __repr__(self) -> str:
        return f"Result({self.name}: {len(self.boxes)} detections, tasks {list(self.predictions)})"


class Model:
    """A unified model: built from a model config, or loaded from a checkpoint.

    Args:
        model: A checkpoint (``.pt``: ours, or a converted official one), an exported ``.onnx`` (fp32 or int8,
            run by onnxruntime: predict, track, val), a model YAML, or a packaged model's name
            (``yolor-tiny``, ``yolor-p6`` ...).
        tasks: The tasks of a model built from a config (default ``detect``; requirements are added). With a
            checkpoint, the tasks a :meth:`train` fine-tunes (default: the checkpoint's).
        nc: Classes of a model built from a config before it is trained (default: the YAML's ``nc``).
        plugins: Import paths of trusted modules registering the tasks a checkpoint needs beyond the
            built-in ones.

    Raises:
        ConfigError: for a config that does not resolve or is invalid (one line, naming it).
        CheckpointError: for a checkpoint that is not a safe unified checkpoint.
    """

    def __init__(
        self,
        model: str | Path = "yolor-tiny",
        tasks: Sequence[str] | None = None,
        *,
        nc: int | None = None,
        plugins: Sequence[str] = (),
    ) -> None:
        self.plugins = list(plugins)
        self.weights: Path | None = None
        self.config: Path | None = None
        self._model: UnifiedModel | None = None
        self._predictor: tuple[str, UnifiedModel] | None = None
        self._img_size: int | None = None
        self._nc = nc
        if Path(model).suffix in CHECKPOINT_SUFFIXES or is_onnx(model):
            self.weights = Path(model).resolve()
            # An exported .onnx runs in onnxruntime (unified.inference.onnx_backend): predict, track, val.
            self._model = load_model(self.weights, plugins=self.plugins)
            self.tasks = resolve_tasks(tasks) if tasks else list(self._model.task_names)
        else:
            self.config = resolve_config(model, "model").resolve()
            load_model_config(self.config)  # a bad YAML is an error now, not at first use
            self.tasks = resolve_tasks(tasks or ["detect"])

    @property
    def model(self) -> UnifiedModel:
        """The ``UnifiedModel``, made on first use: loaded from the checkpoint (after :meth:`train`, the run's
        best), or built untrained from the config (a ``jde`` model needs a dataset's identities: train it)."""
        if self._model is None:
            self._model = (
                load_model(self.weights, plugins=self.plugins)
                if self.weights
                else build_model(self.config, nc=self._nc, tasks=self.tasks, plugins=self.plugins)
            )
        return self._model

    @property
    def names(self) -> dict[int, str]:
        """Class index -> name."""
        return dict(enumerate(self.model.info.class_names))

    def __repr__(self) -> str:
        return f"Model({str(self.weights or self.config)!r}, tasks={self.tasks})"

    # -- training and evaluation ------------------------------------------------------------------------
    def train(
        self,
        data: str | Path | None = None,
        epochs: int | None = None,
        imgsz: int | None = None,
        batch: int | None = None,
        device: str | None = None,
        workers: int | None = None,
        project: str | Path | None = None,
        name: str | None = None,
        *,
        config: str | Path | None = None,
        progress: bool = True,
        hooks: Sequence[Hook] = (),
        **overrides: Any,
    ) -> TrainRun:
        """Train as ``unified train`` does (a new run folder; under torchrun, one process per rank).

        A model from a config trains from scratch; one from a checkpoint (or trained before) fine-tunes its
        weights, with its tasks' options. Afterwards the model is the run's best checkpoint.

        Args:
            data: Dataset YAML.
            epochs, imgsz, batch, device, workers, project, name: As ``--epochs``, ``--img``, ``--batch-size``
                (total over all ranks), ``--device``, ``--workers``, ``--project``, ``--name``; ``None``
                keeps the experiment's value.
            config: An experiment YAML or packaged experiment (``synthetic``) to start from.
            progress: Show progress bars.
            hooks: Your own training hooks (``unified.engine.hooks.Hook``), run before the built-in ones;
                under torchrun every rank runs them, in its own process.
            **overrides: Experiment keys as on the command line, e.g. ``**{"balancer.name": "dwa"}``.

        Returns:
            The run folder and the final metrics per task (empty on ranks other than 0).

        Raises:
            ConfigError, DataError, CheckpointError: before any run folder is created.
            NonFiniteLossError: when training diverged.
        """
        if self.weights is not None and is_onnx(self.weights):
            raise ValueError(
                f"{self.weights} is an ONNX graph for inference: train from a checkpoint or config"
            )
        flags = SimpleNamespace(
            data=_text(data),
            model=None if self.weights else str(self.config),
            weights=_text(self.weights),
            epochs=epochs,
            batch_size=batch,
            img=imgsz,
            device=device,
            workers=workers,
            project=_text(project),
            name=name,
            tasks=",".join(self.tasks),
        )
        texts = [*flags_to_overrides(flags), *self._stored_task_options(), *_override_texts(overrides)]
        # The model's tasks may be a subset of the experiment's: the others' options and weights step aside.
        cfg, notes = set_aside_tasks_left_out(load_experiment(config, texts))
        for note in notes:
            print(note)
        run_dir, metrics = run_training(cfg, progress=progress, extra_hooks=hooks)
        run_dir = run_dir.resolve()  # the model loads from it later, maybe from another working directory
        best = run_dir / "weights" / "best.pt"
        self.weights = best if best.is_file() else run_dir / "weights" / "last.pt"
        # Loaded on first use: under torchrun, ranks other than 0 never need it.
        self._model, self._predictor, self._img_size = None, None, cfg.train.img_size
        return TrainRun(run_dir, metrics)

    def _stored_task_options(self) -> list[str]:
        """A checkpoint's own task options (its head sizes, thresholds) for fine-tuning it."""
        if self.weights is None:
            return []
        own = self.model.tasks
        return [f"task_options.{n}={json.dumps(to_dict(own[n].cfg))}" for n in self.tasks if n in own]

    def val(
        self,
        data: str | Path,
        split: str = "val",
        imgsz: int | None = None,
        batch: int = 16,
        device: str = "cpu",
        workers: int = 2,
        tasks: Sequence[str] | None = None,
        plots: str | Path | None = None,
    ) -> dict[str, dict[str, float]]:
        """Every task's metrics on a split of ``data``, as ``unified val`` computes them (unfused weights).

        Args:
            imgsz: Image size (default: the training size).
            tasks: Evaluate only these (default: all of the model's).
            plots: A folder for each task's plots and COCO results JSON (default: none written).
        """
        torch_device = select_device(device)
        model = self.model.to(torch_device)
        return evaluate_dataset(
            model,
            data,
            split,
            imgsz or self._training_size(),
            batch,
            workers,
            torch_device,
            tasks=tasks,
            plot_dir=Path(plots) if plots is not None else None,
            model_name=str(self.weights or self.config),
        )

    # -- inference --------------------------------------------------------------------------------------
    def predict(
        self,
        source: Source,
        conf: float = 0.25,
        iou: float = 0.45,
        imgsz: int | None = None,
        max_det: int = 300,
        batch: int = 8,
        device: str = "cpu",
    ) -> list[Result]:
        """Predict every image of ``source``, as ``unified predict`` does (fused weights, letterboxed input).

        Args:
            source: An image, folder, glob or video (video needs PyAV), or RGB arrays / PIL images.
            conf: Score threshold.
            iou: NMS IoU threshold.
            imgsz: Inference size (default: the training size).

        Returns:
            One :class:`Result` per image (per frame of a video), in order.
        """
        predictor = self._inference_model(device)
        size = self._checked_size(imgsz)
        with _detect_options(predictor, conf_thres=conf, iou_thres=iou, max_det=max_det, multi_label=False):
            found = predict_frames(predictor, _frames(source), size, batch, select_device(device))
            return [Result(frame, predictions, predictor) for frame, predictions in found]

    def track(
        self,
        source: str | Path,
        imgsz: int | None = None,
        device: str = "cpu",
        tracker: str | Path | None = None,
        **settings: Any,
    ) -> list[tuple[int, list[TrackedObject]]]:
        """Track through a sequence folder (``SEQ/img1`` or the images) or a video, as ``unified track`` does;
        a ``jde`` model matches by appearance too.

        Args:
            tracker: A YAML of tracker settings (``TrackerConfig``).
            **settings: Tracker settings, e.g. ``high_thresh=0.4``.

        Returns:
            ``(frame number, confirmed tracks)`` per frame.
        """
        config = load_config(TrackerConfig, tracker, overrides=_override_texts(settings))
        predictor = self._inference_model(device)
        size = self._checked_size(imgsz)
        with _detect_options(predictor):  # tracking lowers the score threshold: restored afterwards
            return list(track_source(predictor, source, config, img_size=size, device=select_device(device)))

    def export(
        self,
        format: str = "onnx",
        imgsz: int | tuple[int, int] | None = None,
        out: str | Path | None = None,
        opset: int = 17,
        simplify: bool = True,
        check: bool = True,
    ) -> Path:
        """Export to ONNX as ``unified export`` does (fused, decode in the graph, dynamic batch).

        Args:
            imgsz: Input size, one side or ``(height, width)`` (default: the training size).
            out: The file (default: the checkpoint's name with ``.onnx``, else ``MODEL.onnx`` here).
            check: Compare onnxruntime's outputs with PyTorch's.

        Returns:
            The written file.

        Raises:
            ValueError: for a format other than ``onnx``.
            RuntimeError: when onnxruntime's outputs differ from PyTorch's beyond the tolerance.
            MissingDependencyError: without the 'export' extra (onnx, onnxruntime).
        """
        from unified.export.onnx import check_onnx, export_onnx, simplify_onnx

        if self.weights is not None and is_onnx(self.weights):
            raise ValueError(
                f"{self.weights} is an exported ONNX graph already: export the checkpoint it came from"
            )
        if format != "onnx":
            raise ValueError(f"format {format!r}: only 'onnx' is supported")
        sizes = imgsz if isinstance(imgsz, Sequence) else (imgsz or self._training_size(),) * 2
        size = (int(sizes[0]), int(sizes[-1]))
        stem = self.weights.with_suffix("") if self.weights else Path(Path(str(self.config)).stem)
        default = stem.with_name(f"{stem.name}.onnx")
        model = copy.deepcopy(self.model).cpu().eval().fuse()
        source = {"weights": str(self.weights)} if self.weights else {"model": str(self.config)}
        path, _ = export_onnx(model, Path(out) if out else default, size, opset=opset, metadata=source)
        if simplify:
            simplify_onnx(path)
        if check:
            report = check_onnx(path, model, size)
            if not report.ok:
                raise RuntimeError(f"{path}: {report.summary()}")
        return path

    # -- helpers ----------------------------------------------------------------------------------------
    def _inference_model(self, device: str) -> UnifiedModel:
        """A fused copy for prediction (cached per device); the model itself stays unfused for val and train."""
        if self._predictor is None or self._predictor[0] != device:
            fused = copy.deepcopy(self.model).for_inference().to(select_device(device))
            self._predictor = (device, fused)
        return self._predictor[1]

    def _training_size(self) -> int:
        if self._img_size is None and self.weights is not None and is_onnx(self.weights):
            self._img_size = int(self.model.img_size[0])  # fixed in the graph at export
        if self._img_size is None:
            self._img_size = (
                training_image_size(load_safe(self.weights)) if self.weights else DEFAULT_IMG_SIZE
            )
        return self._img_size

    def _checked_size(self, imgsz: int | None) -> int:
        size = imgsz or self._training_size()
        stride = max(self.model.heads["detect"].stride_values)
        if size <= 0 or size % stride:
            raise ValueError(
                f"imgsz {size}: must be a positive multiple of the model's largest stride {stride}"
            )
        return size


@contextlib.contextmanager
def _detect_options(model: UnifiedModel, **changes: Any) -> Iterator[None]:
    """``detect``'s thresholds changed for one call, then restored (the task every model has)."""
    detect = model.tasks["detect"]
    before = detect.cfg
    detect.cfg = dataclasses.replace(before, **changes)
    try:
        yield
    finally:
        detect.cfg = before


def _frames(source: Source) -> Iterator[Frame]:
    """Frames of a path (image, folder, glob, video) or of in-memory RGB images."""
    if isinstance(source, (str, Path)):
        yield from iter_frames(source)
        return
    images = [source] if isinstance(source, (np.ndarray, Image.Image)) else list(source)
    for index, image in enumerate(images):
        array = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else image
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(
                f"source image {index}: expected an (h, w, 3) uint8 RGB array, got {array.shape} {array.dtype}"
            )
        yield Frame(np.ascontiguousarray(array), f"image{index}", f"image{index}", index)


def _text(value: str | Path | None) -> str | None:
    return None if value is None else str(value)


def _override_texts(overrides: dict[str, Any]) -> list[str]:
    """``key=value`` overrides as the command line takes them, each value written as JSON (a YAML subset)."""
    return [f"{key}={json.dumps(value, default=str)}" for key, value in overrides.items()]


__all__ = ["Boxes", "Model", "Result", "TrainRun"]
