"""Static int8 quantisation of an exported graph (QDQ, per-channel weights), calibrated and then measured.

:func:`quantize_int8` runs onnxruntime's ``quantize_static`` on the fp32 graph of
:func:`unified.export.onnx.export_onnx`, calibrated on letterboxed images of a dataset's training split
(:class:`LetterboxCalibration`, min-max ranges). Every head is quantised: the convolutions (and matrix
products) of the body and of every task's head carry int8 weights (one scale per output channel) and uint8
activations, as onnxruntime's x86 kernels (VNNI) prefer. What comes after the heads' last convolutions —
the box decode (grid offsets, anchors, stride: outputs in input pixels), sigmoids, normalisation — stays
fp32: an 8-bit ``decoded`` tensor of a 640-pixel input would step by 2.5 pixels.

:func:`compare_int8` then evaluates the int8 graph against the fp32 one on the validation split with the
ONNX backend and the tasks' own evaluators (:func:`unified.engine.evaluate.evaluate_dataset`), so the drop
printed is the drop of the metrics ``unified val`` reports. Where it is too large, :func:`search_int8`
keeps layers in fp32: first the last convolutions feeding the outputs of the tasks that dropped too much,
then those of every head (``nodes_to_exclude``), and says which.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Operators quantised (the others, decode included, stay fp32; see the module docstring).
QUANTISED_OPS = ("Conv", "MatMul", "Gemm")

#: Largest drop of a task's headline metric (its first ``summary_metrics``) that the search accepts; the
#: issue's aim for detect AP50.
DEFAULT_MAX_DROP = 0.01

#: The outputs each built-in task's headline metric is computed from (a plugin task: every ``{task}_*``).
TASK_OUTPUTS = {"detect": ("decoded",)}


def calibration_images(data: str | Path, img_size: int, count: int, split: str = "train") -> list[np.ndarray]:
    """``count`` images of ``split`` spread evenly over it, letterboxed to ``img_size`` as evaluation does:
    float32 ``(1, 3, S, S)`` arrays in ``[0, 1]``.

    Raises:
        ValueError: for a split without images.
    """
    from unified.data import MultiTaskDataset, load_dataset_yaml
    from unified.data.dataset import collate

    records, info = load_dataset_yaml(data, split)
    if not records:
        raise ValueError(f"{data}: the {split!r} split has no images to calibrate on")
    picks = np.unique(np.linspace(0, len(records) - 1, min(count, len(records))).round().astype(int))
    dataset = MultiTaskDataset([records[i] for i in picks], img_size, False, info=info)
    return [collate([dataset[i]])["images"].numpy() for i in range(len(dataset))]


def make_calibration_reader(images: Sequence[np.ndarray]) -> Any:
    """An onnxruntime ``CalibrationDataReader`` feeding ``images`` one by one as the graph's ``images``."""
    from onnxruntime.quantization import CalibrationDataReader

    class LetterboxCalibration(CalibrationDataReader):
        def __init__(self) -> None:
            self._items: Iterator[np.ndarray] = iter(images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._items, None)
            return None if item is None else {"images": item}

        def rewind(self) -> None:
            self._items = iter(images)

    return LetterboxCalibration()


def head_last_convs(path: str | Path, outputs: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Per graph output, the names of the last quantisable nodes (conv, matmul) feeding it: the heads'
    output convolutions (``/model/heads/detect/m.0/Conv`` ...), found by walking the graph back from the
    output through the fp32 tail (decode, sigmoid, reshape)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    wanted = [o.name for o in graph.output] if outputs is None else list(outputs)
    found: dict[str, list[str]] = {}
    for output in wanted:
        names: list[str] = []
        seen: set[str] = set()
        stack = [output]
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in QUANTISED_OPS:
                names.append(node.name)
            else:
                stack.extend(node.input)
        found[output] = sorted(names)
    return found


def quantize_int8(
    fp32_path: str | Path,
    out: str | Path,
    images: Sequence[np.ndarray],
    exclude: Sequence[str] = (),
) -> Path:
    """Write the int8 QDQ graph of ``fp32_path`` to ``out``, calibrated on ``images``; ``exclude`` names
    nodes kept in fp32. The metadata is the fp32 graph's, with ``precision: int8`` and the excluded nodes.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from unified.export.onnx import read_metadata, write_metadata

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # Shape inference and graph optimisation first, as onnxruntime's quantisation guide asks; the
        # node names the exclusion uses survive it (it fuses nothing across a Conv).
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            make_calibration_reader(images),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTISED_OPS),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            calibrate_method=CalibrationMethod.MinMax,
            calibration_providers=["CPUExecutionProvider"],
            extra_options={"CalibTensorRangeSymmetric": False},
        )
    proto = onnx.load(str(out))
    write_metadata(
        proto,
        {
            **read_metadata(fp32_path),
            "precision": "int8",
            "int8_fp32_nodes": list(exclude),
            "int8_calibration_images": len(images),
        },
    )
    onnx.save(proto, str(out))
    return out


def headline(task: Any) -> str | None:
    """The metric an int8 drop is judged by for a task: its first ``summary_metrics``."""
    names = tuple(getattr(task, "summary_metrics", ()) or ())
    return names[0] if names else None


@dataclass
class Int8Comparison:
    """fp32 and int8 metrics on the same split, and the drop of each task's headline metric.

    Attributes:
        fp32: Per-task metrics of the fp32 graph.
        int8: Per-task metrics of the int8 graph.
        headlines: Task → the metric judged (``detect``: AP50, ``jdc``: mAP, ``jde``: TPR@FAR=0.01 ...).
        excluded: Nodes the int8 graph keeps in fp32.
    """

    fp32: dict[str, dict[str, float]]
    int8: dict[str, dict[str, float]]
    headlines: dict[str, str]
    excluded: list[str] = field(default_factory=list)

    def drops(self) -> dict[str, float]:
        """Task → fp32 minus int8 of its headline metric (positive: int8 is worse; nan: undefined)."""
        out = {}
        for task, metric in self.headlines.items():
            a = self.fp32.get(task, {}).get(metric, float("nan"))
            b = self.int8.get(task, {}).get(metric, float("nan"))
            out[task] = float(a) - float(b)
        return out

    def failing(self, max_drop: float) -> list[str]:
        """Tasks whose headline metric dropped by more than ``max_drop`` (an undefined one never fails)."""
        return [t for t, d in self.drops().items() if not math.isnan(d) and d > max_drop]

    def table(self) -> str:
        """One line per task: metric, fp32, int8, drop."""
        lines = []
        for task, metric in self.headlines.items():
            a = self.fp32.get(task, {}).get(metric, float("nan"))
            b = self.int8.get(task, {}).get(metric, float("nan"))
            lines.append(f"  {task:<8} {metric:<14} fp32 {a:.4f}  int8 {b:.4f}  drop {a - b:+.4f}")
        return "\n".join(lines)


def compare_int8(
    fp32_path: str | Path,
    int8_path: str | Path,
    data: str | Path,
    img_size: int,
    batch_size: int = 8,
    workers: int = 0,
    fp32_metrics: dict[str, dict[str, float]] | None = None,
) -> Int8Comparison:
    """Evaluate both graphs on the validation split with the ONNX backend and the tasks' evaluators."""
    from unified.engine.evaluate import evaluate_dataset
    from unified.inference.onnx_backend import OnnxModel

    def evaluate(path: str | Path) -> tuple[Any, dict[str, dict[str, float]]]:
        model = OnnxModel(path)
        metrics = evaluate_dataset(
            model, data, "val", img_size, batch_size, workers, "cpu", model_name=str(path)
        )
        return model, metrics

    model, fp32 = evaluate(fp32_path) if fp32_metrics is None else (OnnxModel(fp32_path), fp32_metrics)
    int8_model, int8 = evaluate(int8_path)
    headlines = {name: m for name, task in model.tasks.items() if (m := headline(task)) is not None}
    return Int8Comparison(fp32, int8, headlines, list(int8_model.metadata.get("int8_fp32_nodes", [])))


def _outputs_of(task: str, outputs: Sequence[str]) -> list[str]:
    return list(TASK_OUTPUTS.get(task, [o for o in outputs if o.startswith(f"{task}_")]))


def search_int8(
    fp32_path: str | Path,
    out: str | Path,
    data: str | Path,
    img_size: int,
    images: Sequence[np.ndarray],
    max_drop: float = DEFAULT_MAX_DROP,
    exclude: str | Sequence[str] = "auto",
    log: Callable[[str], None] = print,
    batch_size: int = 8,
) -> Int8Comparison:
    """Quantise, evaluate, and where a task's headline metric drops by more than ``max_drop`` keep layers
    in fp32 (``exclude="auto"``): the last convolutions feeding that task's outputs, then those of every
    head. ``exclude`` may instead be ``"none"``, ``"heads"`` (every head's last convolutions) or node names.
    The graph written to ``out`` is the one accepted (or, when none is, the one with the smallest drop).
    """
    last = head_last_convs(fp32_path)
    every_head = sorted({n for names in last.values() for n in names})
    if isinstance(exclude, str) and exclude in ("auto", "none", "heads"):
        fixed = {"none": [], "heads": every_head}.get(exclude)
    else:
        fixed = [exclude] if isinstance(exclude, str) else list(exclude)
    fp32_metrics: dict[str, dict[str, float]] | None = None
    best: tuple[float, Int8Comparison, Path] | None = None
    with tempfile.TemporaryDirectory() as scratch:
        tried: list[list[str]] = []
        candidates: list[list[str]] = [fixed] if fixed is not None else [[]]
        while candidates:
            nodes = candidates.pop(0)
            tried.append(nodes)
            attempt = Path(scratch) / f"int8_{len(tried)}.onnx"
            quantize_int8(fp32_path, attempt, images, nodes)
            result = compare_int8(
                fp32_path, attempt, data, img_size, batch_size=batch_size, fp32_metrics=fp32_metrics
            )
            fp32_metrics = result.fp32
            kept = ", ".join(nodes) if nodes else "none"
            log(f"int8 with fp32 nodes [{kept}]:\n{result.table()}")
            drops = [d for d in result.drops().values() if not math.isnan(d)]
            worst = max(drops, default=0.0)
            if best is None or worst < best[0]:
                best = (worst, result, attempt)
            failing = result.failing(max_drop)
            if not failing or fixed is not None:
                break
            outputs = [n for t in failing for n in _outputs_of(t, list(last))]
            nxt = sorted(set(nodes) | {n for o in outputs for n in last.get(o, [])})
            for candidate in (nxt, every_head):
                if candidate not in tried and candidate not in candidates:
                    candidates.append(candidate)
                    break
        assert best is not None
        worst, result, chosen = best
        shutil.copyfile(chosen, out)
    if result.failing(max_drop):
        log(
            f"warning: no int8 graph tried kept every headline metric within {max_drop}: wrote the one "
            f"with the smallest drop ({worst:.4f})"
        )
    return result


__all__ = [
    "DEFAULT_MAX_DROP",
    "QUANTISED_OPS",
    "Int8Comparison",
    "calibration_images",
    "compare_int8",
    "head_last_convs",
    "headline",
    "make_calibration_reader",
    "quantize_int8",
    "search_int8",
]
