"""ONNX export of a (fused) unified model, with the decode in the graph and an onnxruntime check.

Graph outputs, in order (batch dimension dynamic; the spatial size is fixed at export):

1. ``decoded`` ``(B, N, 5 + nc)``: the detection head's decoded rows (xywh in input pixels, objectness and
   class scores after the sigmoid), ordered level, anchor, grid row, grid column, as in PyTorch.
2. Each other task's outputs, in the model's task order, as its ``Task.export_outputs`` names them:

   * ``jdc``: ``jdc_scores`` ``(B, L)``, the image-label probabilities (labels: ``image_label_names``);
   * ``jde``: ``jde_embeddings`` ``(B, N, D)``, the L2-normalised identity embedding of every ``decoded``
     row (row ``k`` of both belongs to the same level, anchor and cell): after NMS, gather the kept rows;
   * ``segment``: ``segment_coefficients`` ``(B, N, P)`` row for row with ``decoded`` and
     ``segment_protos`` ``(B, P, Hp, Wp)``: a kept row's mask is ``sigmoid(coefficients @ protos)``,
     upsampled to the input and cropped to its box (``SegmentTask.assemble`` does it);
   * ``pose``: ``pose_keypoints`` ``(B, N, K, 3)``, ``x, y`` in input pixels and visibility probability;
   * a task that does not say: every tensor of its eval-mode output dict, named ``{task}_{key}`` (lists
     per level, ``{task}_{key}_{level}``).

3. With ``raw=True``: ``raw_{l}`` ``(B, na, ny, nx, 5 + nc)``, the detection logits per level (debugging).

With ``end2end`` (``unified export --end2end``) NMS is in the graph too (:mod:`unified.export.end2end`):
``detections`` ``(K, 7)`` ``[image, x1, y1, x2, y2, score, class]`` and ``detection_rows`` ``(K, 3)``
``[image, class, row of decoded]``. Otherwise NMS is not in the graph: run it on ``decoded`` outside, e.g. with :func:`postprocess_decoded` (our
``non_max_suppression``: score = objectness × class probability, per-class NMS), or with any NMS after
converting ``xywh`` to corners; boxes are in letterboxed input pixels, so undo the letterbox with
``unified.ops.boxes.letterbox_to_original``.

``onnx`` and ``onnxruntime`` are the ``export`` extra (``pip install 'unified[export]'``); without them a
:class:`~unified.inference.sources.MissingDependencyError` says so.
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unified.inference.sources import MissingDependencyError


class ExportModule(nn.Module):
    """Wraps a ``UnifiedModel`` so that ``forward(images)`` returns the graph outputs as a tuple.

    Args:
        model: The model (put in eval mode here; fuse it before for deployment).
        raw: Also return the detection logits per level.
        end2end: NMS inside the graph (:class:`unified.export.end2end.End2EndNMS`): adds ``detections``
            and ``detection_rows``.

    Attributes:
        output_names: Names of the outputs, in order.
    """

    def __init__(self, model: nn.Module, raw: bool = False, end2end: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.raw = raw
        self.end2end = end2end
        self.output_names: list[str] = []
        # The wrapper itself in eval mode too: torch.onnx.export restores the mode of the module it is given
        # after exporting, and a wrapper left in training mode would switch the model back to training.
        self.eval()

    def named_outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.model(images)
        named: dict[str, torch.Tensor] = {}
        for name, task in self.model.tasks.items():
            given = task.export_outputs(outputs)
            clash = sorted(set(given) & set(named))
            if clash:
                raise ValueError(f"task {name!r} names ONNX outputs {clash} that an earlier task gave")
            named.update(given)
        if self.raw:
            named.update({f"raw_{level}": r for level, r in enumerate(outputs["detect"]["raw"])})
        if self.end2end is not None:
            named.update(self.end2end(named["decoded"]))
        return named

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = self.named_outputs(images)
        self.output_names = list(named)
        return tuple(named.values())


@dataclass
class CheckReport:
    """How the ONNX graph compares with PyTorch on one input.

    Attributes:
        errors: Per output, ``max |onnx - torch| / max(1, max |torch|)``: absolute error for outputs of
            magnitude up to 1 (scores, logits of unit scale), relative to the largest value otherwise
            (``decoded`` boxes are in pixels).
        batch: Batch size of the check input (differs from the export's, to exercise the dynamic batch).
        tolerance: The bound every error must stay under.
    """

    errors: dict[str, float]
    batch: int
    tolerance: float

    @property
    def ok(self) -> bool:
        return all(e <= self.tolerance for e in self.errors.values())

    def summary(self) -> str:
        shown = ", ".join(f"{k} {v:.2e}" for k, v in self.errors.items())
        verdict = "OK" if self.ok else f"FAILED (tolerance {self.tolerance:g})"
        return f"onnxruntime vs PyTorch, batch {self.batch}: {shown}: {verdict}"


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"ONNX export needs {module}, part of the 'export' extra: pip install 'unified[export]' "
            f"(onnx, onnxruntime)"
        ) from None


def export_onnx(
    model: nn.Module,
    out: str | Path,
    img_size: Sequence[int] = (640, 640),
    opset: int = 17,
    raw: bool = False,
    metadata: dict[str, Any] | None = None,
    end2end: nn.Module | None = None,
) -> tuple[Path, list[str]]:
    """Export ``model`` (fuse it first for deployment) to ONNX with a dynamic batch dimension.

    Args:
        model: A ``UnifiedModel``.
        out: The ``.onnx`` file to write.
        img_size: ``(height, width)`` of the input; both multiples of the largest stride.
        opset: ONNX opset version.
        raw: Add the per-level detection logits as outputs.
        metadata: Extra ``metadata_props`` entries (stored as JSON text).
        end2end: NMS in the graph (:class:`unified.export.end2end.End2EndNMS`), outputs added after the others.

    Returns:
        The written path and the output names in order.

    Raises:
        MissingDependencyError: if ``onnx`` is not installed.
        ValueError: if the image size does not divide by the model's largest stride.
    """
    onnx = _require("onnx")
    height, width = int(img_size[0]), int(img_size[-1])
    stride = max(model.heads["detect"].stride_values)
    if height % stride or width % stride:
        raise ValueError(f"image size {height}x{width} must be a multiple of the largest stride {stride}")
    wrapper = ExportModule(model, raw=raw, end2end=end2end)
    device = next(model.parameters()).device
    example = torch.zeros(1, 3, height, width, device=device)
    with torch.no_grad():
        wrapper(example)  # records the output names (and fills the head's grid cache for these sizes)
    names = list(wrapper.output_names)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one, which needs onnxscript;
        # it exports this model exactly, so its deprecation warning is noise here.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        # The end-to-end NMS runs a Python loop while traced: the traced values are replaced by ONNX's own
        # NonMaxSuppression (its symbolic), so the tracer's warnings about them do not apply.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")
        warnings.filterwarnings("ignore", message=".*aten::index operator of advanced indexing.*")
        torch.onnx.export(
            wrapper,
            (example,),
            str(out),
            input_names=["images"],
            output_names=names,
            dynamic_axes={
                "images": {0: "batch"},
                **{n: {0: "detections" if n in END2END_OUTPUTS else "batch"} for n in names},
            },
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(out))
    nms = (
        {
            "end2end": {
                "conf_thres": end2end.conf_thres,
                "iou_thres": end2end.iou_thres,
                "max_det": end2end.max_det,
            }
        }
        if end2end is not None
        else {}
    )
    write_metadata(proto, {**model_metadata(model, (height, width), names), **nms, **(metadata or {})})
    onnx.save(proto, str(out))
    return out, names


#: The outputs ``end2end`` adds (one row per detection: their first axis is not the batch).
END2END_OUTPUTS = ("detections", "detection_rows")

#: ``metadata_props["format"]`` of a graph :func:`export_onnx` wrote; the ONNX backend reads no other.
METADATA_FORMAT = "unified-onnx/1"


def model_metadata(model: nn.Module, img_size: Sequence[int], outputs: Sequence[str]) -> dict[str, Any]:
    """What travels in the ONNX file's ``metadata_props`` (each value JSON text).

    For people and other tools: ``class_names``, ``image_label_names``, ``tasks``, ``strides``,
    ``img_size`` ``[H, W]``, ``outputs`` (names in order). For :class:`unified.inference.onnx_backend.OnnxModel`
    (the same post-processing as PyTorch): ``model_config``, ``dataset_info`` (identities, label kinds and
    their options) and ``task_options`` (every task's resolved config: thresholds, embedding size ...), from
    which it rebuilds the tasks without weights.
    """
    from unified.config import to_dict

    return {
        "format": METADATA_FORMAT,
        "class_names": list(model.info.class_names),
        "image_label_names": list(model.info.image_label_names),
        "tasks": list(model.task_names),
        "strides": list(model.heads["detect"].stride_values),
        "img_size": [int(img_size[0]), int(img_size[-1])],
        "outputs": list(outputs),
        "model_config": to_dict(model.model_cfg),
        "dataset_info": to_dict(model.info),
        "task_options": {name: to_dict(task.cfg) for name, task in model.tasks.items()},
        "precision": "fp32",
    }


def write_metadata(proto: Any, entries: dict[str, Any]) -> None:
    """Set ``proto.metadata_props`` entries (values as JSON text), replacing those of the same key."""
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for key, value in [*kept, *((k, json.dumps(v)) for k, v in entries.items())]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata_props`` of an ONNX file, JSON values decoded (onnxruntime reads them; no onnx needed).

    Raises:
        MissingDependencyError: if ``onnxruntime`` is not installed.
    """
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    raw = session.get_modelmeta().custom_metadata_map
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def simplify_onnx(path: str | Path) -> str:
    """Simplify the graph in place with onnxsim when it is installed; returns what happened."""
    try:
        import onnxsim
    except ImportError:
        return "onnxsim not installed: graph left as exported (constant folding was applied)"
    onnx = _require("onnx")
    model, ok = onnxsim.simplify(onnx.load(str(path)))
    if not ok:
        return "onnxsim could not validate the simplified graph: kept the exported one"
    onnx.save(model, str(path))
    return "simplified with onnxsim"


def check_onnx(
    path: str | Path,
    model: nn.Module,
    img_size: Sequence[int],
    batch: int = 2,
    tolerance: float = 1e-4,
    raw: bool = False,
    seed: int = 0,
    end2end: nn.Module | None = None,
) -> CheckReport:
    """Run the ONNX graph in onnxruntime and PyTorch on the same random input and compare every output.

    Raises:
        MissingDependencyError: if ``onnxruntime`` is not installed.
    """
    ort = _require("onnxruntime")
    height, width = int(img_size[0]), int(img_size[-1])
    images = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    wrapper = ExportModule(model, raw=raw, end2end=end2end)
    device = next(model.parameters()).device
    with torch.no_grad():
        expected = wrapper.named_outputs(images.to(device))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {"images": images.numpy()})))
    errors = {}
    for name, ref in expected.items():
        ref = ref.detach().float().cpu()
        onnx_value = torch.from_numpy(got[name]).float()
        if tuple(onnx_value.shape) != tuple(ref.shape):
            errors[name] = float("inf")
            continue
        if name in END2END_OUTPUTS and ref.numel():
            # One row per detection, in the operator's order, which may order equal scores differently.
            ref, onnx_value = _rows_sorted(ref), _rows_sorted(onnx_value)
        scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
        errors[name] = (onnx_value - ref).abs().max().item() / scale if ref.numel() else 0.0
    return CheckReport(errors, batch, tolerance)


def _rows_sorted(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` ``(K, C)`` in lexicographic order of their columns."""
    import numpy as np

    array = rows.numpy()
    return torch.from_numpy(array[np.lexsort(array.T[::-1])])


def postprocess_decoded(
    decoded: Any, conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 300
) -> list[dict[str, torch.Tensor]]:
    """NMS outside the graph: ``decoded`` (numpy or tensor, ``(B, N, 5 + nc)``) to per-image detections
    (``boxes`` xyxy input pixels, ``scores``, ``classes``, ``index`` = row in ``decoded``)."""
    from unified.ops.nms import non_max_suppression

    tensor = torch.as_tensor(decoded).float()
    return non_max_suppression(tensor, conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det)


__all__ = [
    "END2END_OUTPUTS",
    "METADATA_FORMAT",
    "CheckReport",
    "ExportModule",
    "check_onnx",
    "export_onnx",
    "model_metadata",
    "postprocess_decoded",
    "read_metadata",
    "simplify_onnx",
    "write_metadata",
]
