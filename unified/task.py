"""The task plugin contract.

A task adapts the shared backbone, neck and implicit bank to one job. It owns its head (with its own
implicit prediction-refinement tensors), its target assignment, its loss terms, its post-processing and
its metrics. The model and the trainer only ever talk to tasks through this interface, so a task from a
user's module works exactly like a built-in one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from unified.registry import Registry

#: Label kinds a dataset part can carry and a task can need.
LABEL_KINDS = ("boxes", "image_labels", "identities")


@dataclass(frozen=True)
class FeatureShape:
    """Channels and stride of one feature map that the body hands to the heads."""

    channels: int
    stride: int


@dataclass
class DatasetInfo:
    """What the heads and evaluators need to know about the data.

    Attributes:
        class_names: Detection classes, index = class id.
        image_label_names: Image-level labels: the detection classes first, then scene labels.
        num_identities: Number of distinct identities in the training data (0 when none).
        label_kinds: Label kinds present in at least one dataset part.
    """

    class_names: list[str]
    image_label_names: list[str] = field(default_factory=list)
    num_identities: int = 0
    label_kinds: tuple[str, ...] = ("boxes",)

    def __post_init__(self) -> None:
        if not self.image_label_names:
            self.image_label_names = list(self.class_names)

    @property
    def nc(self) -> int:
        return len(self.class_names)


class Evaluator(Protocol):
    """Accumulates predictions over a split and computes metrics."""

    def update(self, predictions: dict[str, list[dict[str, Any]]], batch: dict[str, Any]) -> None: ...

    def compute(self) -> dict[str, float]: ...


@dataclass
class TaskConfig:
    """Options every task has; task config classes subclass it."""

    #: Shared implicit tensor names: maps this head's tensor name (e.g. ``ia.0``) to a bank name.
    share_implicit: dict[str, str] = field(default_factory=dict)


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
        self, outputs: dict[str, Any], batch: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """Named, unweighted loss terms (scalars) for the images that carry this task's labels.

        Convention (the official YOLO one): each term is a *sum over the labelled images* of a per-image
        loss (e.g. a mean times the number of labelled images), so it scales with the batch. Under DDP
        the trainer multiplies by the world size to undo DDP's gradient averaging, which makes N ranks
        with batch b train like one process with batch N·b.

        ``outputs`` holds every task's head output; ``context`` is shared by all tasks for one step.
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

    def label_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        """Images of the batch that carry every label kind this task needs."""
        masks = batch["label_mask"]
        mask = torch.ones(batch["images"].shape[0], dtype=torch.bool, device=batch["images"].device)
        for kind in self.label_kinds:
            mask &= masks[kind].to(mask.device)
        return mask


TASKS: Registry[type[Task]] = Registry("task", default_modules=("tasks.detect", "tasks.jdc", "tasks.jde"))


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
    "LABEL_KINDS",
    "DatasetInfo",
    "Evaluator",
    "FeatureShape",
    "TASKS",
    "Task",
    "TaskConfig",
    "resolve_tasks",
    "task_config_from",
]
