"""Dataset formats: how a part of a dataset YAML is read, one registered class per ``format:``.

A format reads one split location of a part into :class:`~unified.data.records.ImageRecord` values,
reporting problems to the part's :class:`~unified.data.validate.ProblemLog`. It says which kinds of label
it provides (``provides``); a part may also declare kinds that are derived from those (``image_labels``
from the boxes' classes) or that add themselves to the format (kinds with a COCO hook, for ``coco``).
A plugin module registers its own format with ``@FORMATS.register("name")`` beside its kind and task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from unified.config import ConfigError
from unified.data.kinds import LABEL_KINDS, LabelKind, label_kind
from unified.data.readers import IdentityMap, read_coco, read_jde, read_mot, read_yolo
from unified.data.records import ImageRecord
from unified.data.validate import ProblemLog
from unified.registry import Registry
from unified.structures import DatasetInfo


@dataclass
class CocoSplit:
    """A COCO split: the JSON file and the folder its ``file_name`` entries are relative to."""

    annotations: str
    images: str | None = None


SplitLocation = str | list[str] | CocoSplit | None


@dataclass
class PartContext:
    """What a format needs to read one split of one part.

    Attributes:
        part: The part's name (the scope of its identities).
        label_kinds: The kinds the part declares that the format is asked to fill.
        class_names: The dataset's detection classes.
        image_label_names: The dataset's image labels (classes first, then scene labels).
        base: The dataset YAML's folder; relative locations are resolved against it.
        log: Where problems go.
        identities: The split's identity allocator, shared by all parts.
        check_images: Check every image header (missing, empty, truncated, wrong size).
        kind_options: The dataset YAML's ``kinds:`` options (a format may need them, e.g. the number of
            keypoints of a row); :attr:`info` has them with the names.
    """

    part: str
    label_kinds: list[str]
    class_names: list[str]
    image_label_names: list[str]
    base: Path
    log: ProblemLog
    identities: IdentityMap = field(default_factory=IdentityMap)
    check_images: bool = True
    kind_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def info(self) -> DatasetInfo:
        """The dataset info as far as reading knows it (names and kind options; no identities yet)."""
        return DatasetInfo(
            list(self.class_names), list(self.image_label_names), kind_options=self.kind_options
        )

    def resolve(self, location: str) -> Path:
        """A location from the YAML as a path: absolute, beside the YAML, or (when nothing is there but
        it exists from here) relative to the current directory, as the official data files are written."""
        path = Path(location).expanduser()
        if path.is_absolute():
            return path
        beside = self.base / path
        if not beside.exists() and path.exists():
            return path
        return beside

    def resolve_all(self, location: SplitLocation) -> list[Path]:
        """A location that is one path or a list of paths."""
        if isinstance(location, CocoSplit) or location is None:
            raise ConfigError(f"part {self.part!r}: {{annotations, images}} is only for the coco format")
        return [self.resolve(s) for s in ([location] if isinstance(location, str) else location)]


class DatasetFormat(ABC):
    """Base class of dataset formats."""

    name: ClassVar[str]
    #: Kinds of label this format reads itself.
    provides: ClassVar[tuple[str, ...]] = ("boxes",)

    def accepts(self, kind: LabelKind) -> bool:
        """Whether a part of this format may declare ``kind`` (beyond derived kinds)."""
        return kind.name in self.provides

    @abstractmethod
    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        """The records of one split location (problems go to ``ctx.log``)."""


#: A plugin module registers its formats next to its kinds and tasks: installed plugin packages' formats
#: come from the tasks' entry-point group.
FORMATS: Registry[type[DatasetFormat]] = Registry(
    "dataset format", default_modules=(__name__,), entry_point_group="unified.tasks"
)


def check_part_kinds(fmt: DatasetFormat, kinds: Sequence[str], part: str) -> None:
    """Every kind a part declares is registered, has the kinds it needs, and this format fills it (or it
    derives from what the format fills).

    Raises:
        ConfigError: naming the part, the kind and what would be accepted.
        RegistryError: for an unknown kind, listing the registered ones.
    """
    for name in kinds:
        kind = label_kind(name)
        missing = [r for r in kind.requires if r not in kinds]
        if missing:
            raise ConfigError(f"part {part!r}: label kind {name!r} needs {missing} in the same part")
        derivable = bool(kind.derived_from) and all(
            d in kinds and fmt.accepts(label_kind(d)) for d in kind.derived_from
        )
        if not fmt.accepts(kind) and not derivable:
            accepted = [k for k in LABEL_KINDS.names() if fmt.accepts(label_kind(k))]
            raise ConfigError(
                f"part {part!r}: the {fmt.name} format has no {name!r} labels (it reads {accepted}); "
                "use a format that has them"
            )


@FORMATS.register("coco")
class CocoFormat(DatasetFormat):
    """COCO JSON: every kind with a COCO hook (``LabelKind.coco_field``) can be read from it."""

    name = "coco"

    def accepts(self, kind: LabelKind) -> bool:
        return kind.coco_field is not None

    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        if isinstance(location, CocoSplit):
            ann = ctx.resolve(location.annotations)
            images = ctx.resolve(location.images) if location.images else ann.parent
        elif isinstance(location, str):
            ann = ctx.resolve(location)
            images = ann.parent
        else:
            raise ConfigError(f"part {ctx.part!r}: a coco split is {{annotations, images}} or a JSON path")
        return read_coco(
            ann,
            images,
            ctx.class_names,
            ctx.image_label_names,
            ctx.label_kinds,
            ctx.log,
            part=ctx.part,
            identities=ctx.identities,
            check_images=ctx.check_images,
            kind_options=ctx.kind_options,
        )


@FORMATS.register("yolo")
class YoloFormat(DatasetFormat):
    """YOLO txt labels beside ``images/`` folders (``labels/``)."""

    name = "yolo"

    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        return read_yolo(ctx.resolve_all(location), ctx.class_names, ctx.label_kinds, ctx.log, part=ctx.part)


@FORMATS.register("jde")
class JdeFormat(DatasetFormat):
    """JDE ``labels_with_ids`` txt labels (class, identity, box)."""

    name = "jde"
    provides = ("boxes", "identities")

    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        return read_jde(
            ctx.resolve_all(location),
            ctx.class_names,
            ctx.label_kinds,
            ctx.log,
            part=ctx.part,
            identities=ctx.identities,
        )


@FORMATS.register("mot")
class MotFormat(DatasetFormat):
    """MOTChallenge sequences (``seqinfo.ini``, ``img1/``, ``gt/gt.txt``)."""

    name = "mot"
    provides = ("boxes", "identities")

    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        records: list[ImageRecord] = []
        for source in ctx.resolve_all(location):
            records.extend(
                read_mot(
                    source,
                    ctx.class_names,
                    ctx.label_kinds,
                    ctx.log,
                    part=ctx.part,
                    identities=ctx.identities,
                    check_images=ctx.check_images,
                )
            )
        return records


__all__ = [
    "CocoSplit",
    "DatasetFormat",
    "FORMATS",
    "PartContext",
    "SplitLocation",
    "check_part_kinds",
]
