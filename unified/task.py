"""The task plugin contract.

A task adapts the shared backbone, neck and implicit bank to one job. It owns its head (with its own
implicit prediction-refinement tensors), its target assignment, its loss terms, its post-processing and
its metrics. The model and the trainer only ever talk to tasks through this interface, so a task from a
user's module works exactly like a built-in one.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from unified.data.kinds import LABEL_KINDS
from unified.registry import Registry
from unified.structures import DatasetInfo, FeatureShape

if TYPE_CHECKING:
    from PIL import Image

R = TypeVar("R")

#: One image's predictions: every task's post-processed result for that image, keyed by task name.
ImagePredictions = dict[str, dict[str, Any]]


class Evaluator(ABC):
    """Accumulates predictions over a split and computes metrics."""

    @abstractmethod
    def update(self, predictions: dict[str, list[dict[str, Any]]], batch: dict[str, Any]) -> None:
        """Add one batch: every task's post-processed ``predictions`` and the batch with its labels."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metrics over everything added (fractions in [0, 1]; ``nan`` where undefined)."""

    def save_plots(self, directory: Path) -> list[Path]:
        """Draw the last :meth:`compute`'s curves into ``directory``; the files written (none by default)."""
        return []


class StepContext:
    """Work that tasks share during one training step, each result computed once by the task that owns
    it: a task that builds on another asks that task (e.g. ``DetectTask.step``), never this object."""

    def __init__(self) -> None:
        self._results: dict[str, Any] = {}

    def once(self, owner: Task, compute: Callable[[], R]) -> R:
        """``compute()`` the first time ``owner`` asks during this step; the same result after that."""
        if owner.name not in self._results:
            self._results[owner.name] = compute()
        return self._results[owner.name]


@dataclass
class TaskConfig:
    """Options every task has (none yet); task config classes subclass it. Sharing implicit tensors
    between heads is the experiment's ``implicit_share``."""


class Task(ABC):
    """Base class of task plugins.

    Subclasses set the class attributes and implement the abstract methods. Instances are created by
    the model builder with their validated config, the dataset info and the instances of the tasks
    they require (``self.requirements``).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[TaskConfig]] = TaskConfig
    #: Tasks this one builds on; they are enabled with it and shared, never duplicated.
    requires: ClassVar[tuple[str, ...]] = ()
    #: Label kinds an image needs for this task's loss to cover it.
    label_kinds: ClassVar[tuple[str, ...]] = ()
    #: Keys of :meth:`image_fields` (outputs about the whole image, e.g. labels with scores).
    image_keys: ClassVar[tuple[str, ...]] = ()
    #: Keys of :meth:`arrays` (per-detection arrays, e.g. embeddings).
    array_keys: ClassVar[tuple[str, ...]] = ()
    #: When :meth:`draw` runs, lowest first (ties in the model's order): regions (masks) -1, boxes 0,
    #: points 1, text 2, so that nothing hides what is drawn before it.
    draw_layer: ClassVar[int] = 0
    #: Metrics of its evaluator that the per-epoch progress line and ``results.png`` show (empty: the
    #: first three whose names hold no ``/``).
    summary_metrics: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: TaskConfig, info: DatasetInfo, requirements: dict[str, Task]) -> None:
        self.cfg = cfg
        self.info = info
        self.requirements = requirements

    @abstractmethod
    def build_head(
        self, feature_shapes: Sequence[FeatureShape], bank: nn.Module, model_cfg: Any
    ) -> nn.Module:
        """Build this task's head from the body's output shapes and the shared implicit bank."""

    @abstractmethod
    def loss(
        self, outputs: dict[str, Any], batch: dict[str, Any], context: StepContext
    ) -> dict[str, torch.Tensor]:
        """Named, unweighted loss terms (scalars) for the images that carry this task's labels.

        Convention (the official YOLO one): each term is a *sum over the labelled images* of a per-image
        loss (e.g. a mean times the number of labelled images), so it scales with the batch. Under DDP
        the trainer multiplies by the world size to undo DDP's gradient averaging, which makes N ranks
        with batch b train like one process with batch N·b.

        ``outputs`` holds every task's head output; ``batch`` holds the images and one entry per kind of
        label (see ``docs/ARCHITECTURE.md``); ``context`` is shared by all tasks for one step.
        A batch with no labels for this task must still return terms connected to the head's
        parameters (multiplied by zero), so that distributed gradient reduction never waits forever.
        """

    @abstractmethod
    def postprocess(
        self,
        outputs: dict[str, Any],
        predictions: dict[str, list[dict[str, Any]]],
        meta: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Per-image predictions; ``predictions`` already holds those of the required tasks."""

    @abstractmethod
    def make_evaluator(self) -> Evaluator:
        """A fresh evaluator for this task's metrics."""

    def fitness(self, metrics: dict[str, float]) -> float:
        """One number to rank checkpoints by (higher is better); default: the first metric reported."""
        return float(next(iter(metrics.values()), 0.0))

    # What the tools show and write (defaults: nothing); ``predictions`` is one image's, of every task,
    # in original-image pixels, as ``postprocess`` made them.

    def draw(self, canvas: Image.Image, predictions: ImagePredictions) -> Image.Image:
        """Draw this task's prediction on ``canvas`` (the original RGB image, drawn on by the tasks of lower
        :attr:`draw_layer`) and return it; helpers are in :mod:`unified.drawing`."""
        return canvas

    def ground_truth(self, batch: dict[str, Any], index: int) -> dict[str, Any] | None:
        """Image ``index`` of ``batch``: its labels for this task in the form of :meth:`postprocess`'s output
        (original pixels by the batch's ``meta``; no scores), so that :meth:`draw` shows them; None (the
        default) when the image carries none of them or the task shows none."""
        return None

    def instance_fields(self, predictions: ImagePredictions) -> list[dict[str, Any]]:
        """JSON fields per kept detection, row for row with ``detect``'s (COCO result names: ``bbox``,
        ``segmentation``, ``keypoints`` ...), merged into one record per detection; ``[]`` for none."""
        return []

    def image_fields(self, predictions: ImagePredictions) -> dict[str, Any]:
        """JSON values about the whole image under :attr:`image_keys`; ``{}`` for none."""
        return {}

    def arrays(self, predictions: ImagePredictions) -> dict[str, np.ndarray]:
        """Per-detection arrays under :attr:`array_keys` (one row per kept detection); ``{}`` for none."""
        return {}

    def export_outputs(self, outputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Named ONNX graph outputs from the model's eval-mode ``outputs`` (every task's). Default: each
        tensor of this task's output dict as ``{task}_{key}`` (lists per level: ``{task}_{key}_{level}``)."""
        found: dict[str, torch.Tensor] = {}
        for key, value in outputs[self.name].items():
            items = value if isinstance(value, (list, tuple)) else [value]
            for level, item in enumerate(items):
                if isinstance(item, torch.Tensor):
                    found[f"{self.name}_{key}" + (f"_{level}" if item is not value else "")] = item
        return found

    def read_export_outputs(self, named: Mapping[str, torch.Tensor], size: tuple[int, int]) -> dict[str, Any]:
        """The inverse of :meth:`export_outputs`: this task's eval-output dict from the graph's named
        outputs (every task's) for an input of ``size`` ``(H, W)``, as the ONNX backend hands it to
        :meth:`postprocess`. Default: ``{task}_{key}`` → ``key``, ``{task}_{key}_{level}`` → ``key`` as a list
        ordered by level; a task that overrides :meth:`export_outputs` overrides this too."""
        prefix = f"{self.name}_"
        single: dict[str, torch.Tensor] = {}
        levels: dict[str, dict[int, torch.Tensor]] = {}
        for name, value in named.items():
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            match = re.fullmatch(r"(.+)_(\d+)", rest)
            if match:
                levels.setdefault(match.group(1), {})[int(match.group(2))] = value
            else:
                single[rest] = value
        out: dict[str, Any] = dict(single)
        for key, by_level in levels.items():
            out[key] = [by_level[i] for i in sorted(by_level)]
        return out

    def label_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        """Images of the batch that carry every label kind this task needs (none, for a kind the batch
        does not hold at all)."""
        masks = batch["label_mask"]
        images = batch["images"]
        mask = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
        for kind in self.label_kinds:
            mask &= masks[kind].to(mask.device) if kind in masks else torch.zeros_like(mask)
        return mask


#: The methods of the contract, checked against every registered task's signatures at build time.
_CONTRACT = (
    "build_head",
    "loss",
    "postprocess",
    "make_evaluator",
    "fitness",
    "draw",
    "ground_truth",
    "instance_fields",
    "image_fields",
    "arrays",
    "export_outputs",
)


def _parameters(function: Callable[..., Any]) -> list[str]:
    return [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]


def check_task_contract(task_cls: type[Task]) -> None:
    """Raise ``TypeError`` naming the task and what is wrong when a task class breaks the contract:
    methods left abstract, a method whose required arguments differ from the contract's, a config class
    that is not a ``TaskConfig`` dataclass, or a label kind nobody registered."""
    name = getattr(task_cls, "name", task_cls.__qualname__)
    problems = []
    if inspect.isabstract(task_cls):
        problems.append(f"does not implement {sorted(task_cls.__abstractmethods__)}")
    for method in _CONTRACT:
        expected, actual = _parameters(getattr(Task, method)), _parameters(getattr(task_cls, method))
        if actual != expected:
            problems.append(
                f"{method}({', '.join(actual)}) where the contract is {method}({', '.join(expected)})"
            )
    config = task_cls.config_class
    if not (dataclasses.is_dataclass(config) and issubclass(config, TaskConfig)):
        problems.append(f"config_class {config.__qualname__} is not a dataclass subclassing TaskConfig")
    unknown = [k for k in task_cls.label_kinds if k not in LABEL_KINDS]
    if unknown:
        problems.append(f"label kinds {unknown} are not registered (registered: {LABEL_KINDS.names()})")
    if problems:
        raise TypeError(
            f"task {name!r} ({task_cls.__module__}) breaks the task contract: {'; '.join(problems)}"
        )


TASKS: Registry[type[Task]] = Registry(
    "task",
    default_modules=(
        "unified.tasks.detect",
        "unified.tasks.jdc",
        "unified.tasks.jde",
        "unified.tasks.pose",
        "unified.tasks.segment",
    ),
    entry_point_group="unified.tasks",
)


def resolve_tasks(names: Sequence[str]) -> list[str]:
    """Expand requirements and order tasks so that every task comes after those it requires.

    Raises:
        RegistryError: for an unknown task name, listing the registered ones.
    """
    ordered: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in ordered:
            return
        if name in chain:
            raise ValueError(f"task requirements form a cycle: {' -> '.join((*chain, name))}")
        task_cls = TASKS.get(name)
        check_task_contract(task_cls)
        for required in task_cls.requires:
            visit(required, (*chain, name))
        ordered.append(name)

    for name in names:
        visit(name, ())
    return ordered


def task_config_from(
    task_cls: type[Task], data: dict[str, Any] | None, source: str | None = None
) -> TaskConfig:
    """Validate one task's config section against its dataclass."""
    from unified.config import from_dict

    return from_dict(task_cls.config_class, data or {}, source=source, prefix=f"task_options.{task_cls.name}")


__all__ = [
    "DatasetInfo",
    "Evaluator",
    "FeatureShape",
    "ImagePredictions",
    "StepContext",
    "TASKS",
    "Task",
    "TaskConfig",
    "check_task_contract",
    "resolve_tasks",
    "task_config_from",
]
