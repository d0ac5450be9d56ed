"""The label-kind contract: one class per kind of label, registered in ``LABEL_KINDS``.

A kind of label (boxes, image labels, identities, a plugin's own) says in one place everything the data
pipeline needs to carry it from a file to a task's loss:

- the value it keeps in an image's record (``ImageRecord.labels[name]``), and how that value is checked;
- how the dataset formats fill it (a format reads the kinds it knows; a kind may add itself to the COCO
  reader with :meth:`LabelKind.from_coco_annotation` / :meth:`LabelKind.from_coco_image`, or be derived
  from other kinds with :meth:`LabelKind.derive`);
- how every geometric augmentation moves it: a 3x3 pixel transform (resize, letterbox, mosaic placement,
  random affine/perspective), a crop to a region (mosaic), flips (with the kind's own left/right swap
  where it needs one), joining images (mosaic, mixup);
- how it becomes one sample's tensors, collates into the batch entry of the same name and moves to a
  device.

A kind is either *per instance* (one row per object, aligned with the ``boxes`` rows of the same image,
such as identities, masks or keypoints) or *per image* (one value for the whole image, such as image
labels). Per-instance kinds travel with their boxes: when an augmentation drops a box, every
per-instance kind drops the same row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from unified.registry import Registry

if TYPE_CHECKING:
    from unified.data.readers import ReadContext
    from unified.structures import DatasetInfo

#: The kind whose rows are an image's instances: every per-instance kind has one row per box.
INSTANCE_KIND = "boxes"
#: Batch keys that belong to the batch itself, never to a kind of label.
RESERVED_NAMES = frozenset({"images", "label_mask", "meta", "labels"})


@dataclass
class PieceOutcome:
    """What happened to one source image inside a combined training image (mosaic or a single warp).

    Attributes:
        labels: The piece's label values before the warp, keyed by kind.
        kinds: The kinds the piece carries.
        kept: The piece's per-instance values that survived the warp (after box filtering), keyed by kind.
        visible: Fraction of the output image that the piece covers.
    """

    labels: dict[str, Any]
    kinds: frozenset[str]
    kept: dict[str, Any] = field(default_factory=dict)
    visible: float = 1.0


class LabelKind:
    """Base class of label kinds. Subclasses set ``name`` and override what their values need.

    The defaults suit a per-image value that geometry does not change (it is kept as it is through warps
    and flips; a combined image keeps the first piece's value).
    """

    name: ClassVar[str]
    #: One row per object, aligned with the image's boxes.
    per_instance: ClassVar[bool] = False
    #: Kinds an image must also carry for this one to make sense (per-instance kinds need ``boxes``).
    requires: ClassVar[tuple[str, ...]] = ()
    #: Where COCO JSON carries this kind: ``"annotation"`` (read by :meth:`from_coco_annotation`),
    #: ``"image"`` (:meth:`from_coco_image`) or None (the ``coco`` format cannot carry it).
    coco_field: ClassVar[Literal["annotation", "image"] | None] = None
    #: Kinds this one is worked out from (:meth:`derive`) when a format does not provide it.
    derived_from: ClassVar[tuple[str, ...]] = ()
    #: COCO ``iscrowd`` annotations are left out of a part unless one of its kinds keeps them (the
    #: ``ignore`` kind, which marks them as regions to leave alone).
    keeps_crowd: ClassVar[bool] = False
    #: A dataclass of dataset-level options (the dataset YAML's ``kinds: {<name>: {...}}``, e.g. the
    #: number of keypoints and their flip permutation), or None when the kind takes none.
    options_class: ClassVar[type | None] = None

    def options(self, info: DatasetInfo) -> Any:
        """This kind's dataset options (an ``options_class`` instance; None when the kind takes none)."""
        if self.options_class is None:
            return None
        raw = info.kind_options.get(self.name, {})
        key = repr(sorted(raw.items()))
        cache = self.__dict__.setdefault("_options", {})
        if key not in cache:
            from unified.config import from_dict

            cache[key] = from_dict(self.options_class, raw, prefix=f"kinds.{self.name}")
        return cache[key]

    # ------------------------------------------------------------------------------------ the record
    def empty(self) -> Any:
        """The value of an image that carries this kind but has no such label (no objects, no tags)."""
        raise NotImplementedError(f"label kind {self.name!r} defines no empty value")

    def check(self, value: Any, num_instances: int) -> str | None:
        """Why ``value`` is not a valid record value (None when it is); per-instance values have
        ``num_instances`` rows."""
        if self.per_instance and len(value) != num_instances:
            return f"{len(value)} {self.name} rows for {num_instances} boxes"
        return None

    def count(self, value: Any) -> int:
        """Number of instances in a per-instance value."""
        return len(value)

    def example(
        self, labels: dict[str, Any], size: tuple[int, int], info: DatasetInfo, rng: np.random.Generator
    ) -> Any:
        """A valid, non-trivial value for an image of ``(width, height)`` that already holds ``labels``
        (the kinds this one requires): what the registry-generated tests push through the pipeline."""
        raise NotImplementedError(f"label kind {self.name!r} gives no example value for the contract tests")

    def derive(self, labels: dict[str, Any], info: DatasetInfo) -> Any | None:
        """The value worked out from an image's other kinds, for formats that do not provide this one
        (None: this kind cannot be derived)."""
        return None

    # ------------------------------------------------------------------------------- COCO extension
    def from_coco_annotation(self, ann: dict, where: str, ctx: ReadContext) -> Any:
        """One instance's value from a COCO annotation (per-instance kinds that COCO JSON can carry).

        Returns the value, or ``INVALID`` after reporting a problem to ``ctx.log`` (the annotation is then
        left out). Raising ``NotImplementedError`` means COCO JSON cannot carry this kind.
        """
        raise NotImplementedError

    def stack(self, items: Sequence[Any]) -> Any:
        """A per-instance value from the items :meth:`from_coco_annotation` returned, in order."""
        raise NotImplementedError

    def from_coco_image(self, entry: dict, where: str, instances: dict[str, Any], ctx: ReadContext) -> Any:
        """A per-image value from a COCO image entry and the image's per-instance values."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------- geometry
    def transform(self, value: Any, matrix: np.ndarray) -> Any:
        """The value after the 3x3 pixel transform ``matrix`` (input to output pixels), not clipped."""
        return value

    def crop(self, value: Any, region: np.ndarray) -> Any:
        """The value restricted to ``region`` (xyxy pixels): the part of the image that is kept."""
        return value

    def warp(self, value: Any, matrix: np.ndarray, out_size: tuple[int, int]) -> Any:
        """The value after the random perspective ``matrix`` into an output of ``(width, height)``,
        clipped to it."""
        return self.crop(self.transform(value, matrix), np.array([0.0, 0.0, *out_size]))

    def survivors(self, before: Any, after: Any, gain: float) -> np.ndarray | None:
        """Which instances are still worth keeping after a warp (per-instance kinds; None: all).

        Args:
            before: The value before the warp.
            after: The value after :meth:`warp`.
            gain: The warp's linear scale (square root of its area gain).
        """
        return None

    def select(self, value: Any, keep: np.ndarray) -> Any:
        """The rows of a per-instance value where ``keep`` is true."""
        return value[keep]

    def flip(self, value: Any, size: tuple[int, int], horizontal: bool, info: DatasetInfo) -> Any:
        """The value after mirroring an image of ``(width, height)`` left-right or up-down (a kind with
        left and right parts swaps them here, e.g. by a permutation in its dataset options)."""
        return value

    def concat(self, values: Sequence[Any]) -> Any:
        """One value for images laid side by side (mosaic) or blended (mixup)."""
        if self.per_instance:
            return np.concatenate(list(values))
        return values[0]

    def combine(self, outcomes: Sequence[PieceOutcome], info: DatasetInfo) -> Any:
        """A per-image value for a combined image, from what happened to each source piece."""
        return self.concat([o.labels[self.name] for o in outcomes])

    # -------------------------------------------------------------------------------------- batches
    def to_sample(
        self, value: Any | None, num_instances: int, size: tuple[int, int], info: DatasetInfo
    ) -> Any:
        """One sample's tensor(s) for a value in output pixels of ``(width, height)``.

        ``value`` is None when the image does not carry this kind: per-instance kinds then fill
        ``num_instances`` rows with a "none" marker, per-image kinds a neutral value; the batch's
        ``label_mask`` says which images really carry it.
        """
        raise NotImplementedError(f"label kind {self.name!r} cannot be put into a sample")

    def collate(self, values: Sequence[Any]) -> Any:
        """The batch entry from the samples' values (per-instance: rows concatenated in sample order,
        so they line up with the ``boxes`` rows; per-image: stacked)."""
        if self.per_instance:
            return torch.cat(list(values))
        return torch.stack(list(values))

    def to_device(self, value: Any, device: torch.device) -> Any:
        """The batch entry on ``device``."""
        return move_to(value, device)


#: Singleton a reader hook returns for an annotation it rejected (after logging why).
INVALID: Any = object()


def count_instances(labels: dict[str, Any]) -> int:
    """How many instances (rows of every per-instance kind) an image's labels hold."""
    anchor = labels.get(INSTANCE_KIND)
    return label_kind(INSTANCE_KIND).count(anchor) if anchor is not None else 0


def move_to(value: Any, device: torch.device, memory_format: torch.memory_format | None = None) -> Any:
    """Tensors anywhere in nested dicts, lists and tuples moved to ``device`` (4-D float tensors in
    ``memory_format`` when given); everything else as it is."""
    if isinstance(value, torch.Tensor):
        value = value.to(device, non_blocking=True)
        if memory_format is not None and value.ndim == 4 and value.is_floating_point():
            value = value.contiguous(memory_format=memory_format)
        return value
    if isinstance(value, dict):
        return {k: move_to(v, device, memory_format) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(move_to(v, device, memory_format) for v in value)
    return value


def _check_name(kind: type[LabelKind]) -> None:
    if kind.name in RESERVED_NAMES:
        raise ValueError(
            f"label kind name {kind.name!r} is reserved for the batch ({sorted(RESERVED_NAMES)})"
        )


class _KindRegistry(Registry[type[LabelKind]]):
    """The registry of label kinds; it refuses names that the batch itself uses."""

    def add(self, name: str, obj: type[LabelKind]) -> None:
        if getattr(obj, "name", None) != name:
            raise ValueError(f"label kind class {obj.__qualname__} must set name = {name!r}")
        _check_name(obj)
        super().add(name, obj)


#: Task plugin modules register their kinds of label next to their tasks, so the kinds of installed
#: plugin packages come from the same entry-point group as their tasks.
LABEL_KINDS: Registry[type[LabelKind]] = _KindRegistry(
    "label kind",
    default_modules=(
        "unified.data.kinds.boxes",
        "unified.data.kinds.identities",
        "unified.data.kinds.ignore",
        "unified.data.kinds.image_labels",
    ),
    entry_point_group="unified.tasks",
)

_INSTANCES: dict[str, LabelKind] = {}


def label_kind(name: str) -> LabelKind:
    """The (stateless, shared) instance of the kind registered as ``name``.

    Raises:
        RegistryError: listing the registered kinds.
    """
    kind = _INSTANCES.get(name)
    if kind is None:  # a name keeps its class once registered (the registry refuses a second one)
        kind = _INSTANCES[name] = LABEL_KINDS.get(name)()
    return kind


def kind_order(names: Sequence[str] | frozenset[str] | set[str]) -> list[str]:
    """``names`` with every kind before the kinds that require it (``boxes`` first), then by name."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        for required in LABEL_KINDS.get(name).requires:
            if required in names:
                visit(required)
        ordered.append(name)

    for name in sorted(names):
        visit(name)
    return ordered


__all__ = [
    "INSTANCE_KIND",
    "INVALID",
    "LABEL_KINDS",
    "LabelKind",
    "PieceOutcome",
    "RESERVED_NAMES",
    "count_instances",
    "kind_order",
    "label_kind",
    "move_to",
]
