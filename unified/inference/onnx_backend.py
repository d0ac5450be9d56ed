"""ONNX Runtime as an inference backend: an exported ``.onnx`` that quacks like the eval-mode model.

:class:`OnnxModel` runs the graph :func:`unified.export.onnx.export_onnx` wrote (fp32, or int8 from
``unified export --int8``) and turns its named outputs back into the eval-output dicts every task's
``postprocess`` reads (``outputs["detect"]["decoded"]`` ...), so prediction, tracking and evaluation
(:func:`unified.engine.evaluate.predict`, :func:`~unified.engine.evaluate.run_evaluation`,
:func:`unified.inference.predict_frames`) run it with the same pre- and post-processing as PyTorch and name
no backend. The tasks themselves are rebuilt from the metadata the export stores (model config, dataset
info, every task's options) on the ``meta`` device: their heads exist for the shapes and numbers
post-processing reads (anchors, strides, prototype stride), with no weights.

What the graph outputs to what ``postprocess`` reads is each task's ``Task.read_export_outputs``, the
inverse of its ``Task.export_outputs`` (a plugin task that names its outputs its own way overrides both).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unified.config import ConfigError, from_dict
from unified.task import DatasetInfo, Task


def is_onnx(weights: str | Path) -> bool:
    """Whether ``weights`` names an ONNX file (by its suffix)."""
    return Path(weights).suffix.lower() == ".onnx"


class OnnxModel:
    """An exported ONNX graph run by onnxruntime behind the interface inference uses of ``UnifiedModel``.

    ``model(images)`` returns the eval-output dicts (CPU tensors), and ``tasks``, ``info``, ``heads``,
    ``task_names``, ``model_cfg`` are those of the exported model, so ``predict``, ``run_evaluation``,
    the writers and the tracker take it as they take the PyTorch model.

    Args:
        path: The ``.onnx`` file (written by ``unified export``, with its metadata).
        plugins: Modules to import for tasks that are not built in.
        providers: onnxruntime execution providers (default: the CPU one).
        threads: onnxruntime intra-op threads (default: torch's thread count).

    Attributes:
        img_size: ``(H, W)`` the graph takes (fixed at export; the batch is dynamic).
        precision: ``fp32`` or ``int8`` as the export recorded it.
        metadata: Every ``metadata_props`` entry, decoded.

    Raises:
        MissingDependencyError: without onnxruntime.
        ConfigError: for an ONNX file without unified's metadata.
    """

    training = False

    def __init__(
        self,
        path: str | Path,
        plugins: Sequence[str] = (),
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        from unified.export.onnx import METADATA_FORMAT, _require, read_metadata
        from unified.model import build_model

        ort = _require("onnxruntime")
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        if self.metadata.get("format") != METADATA_FORMAT:
            raise ConfigError(
                f"{self.path}: not an ONNX graph written by unified export (metadata format "
                f"{self.metadata.get('format')!r}, expected {METADATA_FORMAT!r}); export it again with "
                "`unified export --weights W.pt`"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(
            str(self.path), options, providers=list(providers or ["CPUExecutionProvider"])
        )
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.img_size: tuple[int, int] = tuple(int(v) for v in self.metadata["img_size"])  # type: ignore[assignment]
        self.precision = str(self.metadata.get("precision", "fp32"))
        info = from_dict(DatasetInfo, self.metadata["dataset_info"], source=f"{self.path} (dataset_info)")
        # The meta device: heads with their shapes and settings, and no memory for weights never used.
        with torch.device("meta"):
            skeleton = build_model(
                self.metadata["model_config"],
                tasks=self.metadata["tasks"],
                info=info,
                task_options=self.metadata.get("task_options"),
                plugins=plugins,
            )
        self.model_cfg = skeleton.model_cfg
        self.info = skeleton.info
        self.heads = skeleton.heads
        self.tasks: dict[str, Task] = skeleton.tasks

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def run(self, images: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        """The graph's named outputs for a ``(B, 3, H, W)`` batch in ``[0, 1]``.

        Raises:
            ValueError: for an input of another size than the graph's.
        """
        array = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else images
        if tuple(array.shape[-2:]) != self.img_size:
            h, w = self.img_size
            raise ValueError(
                f"{self.path} takes {h}x{w} inputs (fixed at export), got {array.shape[-2]}x{array.shape[-1]}: "
                f"run with --img {h}" + ("" if h == w else " (or export again at a square size)")
            )
        values = self.session.run(None, {"images": np.ascontiguousarray(array, dtype=np.float32)})
        return {name: torch.from_numpy(value) for name, value in zip(self.output_names, values)}

    def __call__(self, images: torch.Tensor) -> dict[str, dict[str, Any]]:
        """The eval-output dicts of every task (what ``UnifiedModel.forward`` returns in eval mode, less
        what no post-processing reads, such as the raw logits)."""
        named = self.run(images)
        size = self.img_size
        return {
            name: task.read_export_outputs(named, size)
            for name, task in self.tasks.items()
        }

    # The rest of UnifiedModel's interface that inference calls: nothing to do for a fixed graph.

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        if mode:
            raise RuntimeError(f"{self.path} is an ONNX graph: it runs inference only")
        return self

    def fuse(self) -> OnnxModel:
        return self

    def for_inference(self, fuse: bool = True, channels_last: bool = True) -> OnnxModel:
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxModel:
        return self

    def cpu(self) -> OnnxModel:
        return self

    def parameters(self) -> Iterator[torch.Tensor]:
        return iter(())

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxModel:
        # A copy shares the onnxruntime session (which cannot be copied, and never changes) and gets its
        # own tasks, whose thresholds a caller may change (``unified predict --conf``, ``Model.predict``).
        clone = copy.copy(self)
        clone.tasks = copy.deepcopy(self.tasks, memo)
        return clone

    def __repr__(self) -> str:
        return (
            f"OnnxModel({str(self.path)!r}, tasks={self.task_names}, {self.precision}, img {self.img_size})"
        )


def check_onnx_size(model: Any, size: int, flag: str = "--img") -> None:
    """An ONNX graph takes the input size it was exported at: a square ``size`` other than that is a
    mistake in the command line, said before any work (nothing for a PyTorch model).

    Raises:
        ConfigError: naming the flag, the size typed and the graph's.
    """
    if not isinstance(model, OnnxModel) or model.img_size == (size, size):
        return
    h, w = model.img_size
    hint = f"pass {flag} {h}" if h == w else "export it again at a square size"
    raise ConfigError(f"{flag} {size}: {model.path} was exported at {h}x{w} (fixed in the graph): {hint}")


def load_model(weights: str | Path, device: str | torch.device = "cpu", plugins: Sequence[str] = ()) -> Any:
    """A ``UnifiedModel`` from a checkpoint, or an :class:`OnnxModel` from an ``.onnx`` file (CPU only).

    Raises:
        CheckpointError: for a checkpoint that cannot be loaded.
        ConfigError: for an ONNX file on a CUDA device, or one without unified's metadata.
        MissingDependencyError: for an ONNX file without onnxruntime installed.
    """
    if is_onnx(weights):
        if torch.device(device).type != "cpu":
            raise ConfigError(f"{weights}: ONNX models run on the CPU here (onnxruntime); pass --device cpu")
        return OnnxModel(weights, plugins=plugins)
    from unified.model import load

    return load(weights, device=device, plugins=plugins)


__all__ = [
    "OnnxModel",
    "check_onnx_size",
    "is_onnx",
    "load_model",
]
