"""Dataset formats: how a part of a dataset YAML is read, one registered class per ``format:``.

A format reads one split location of a part into :class:`~unified.data.records.ImageRecord` values,
reporting problems to the part's :class:`~unified.data.validate.ProblemLog`. It says which kinds of label
it provides (``provides``); a part may also declare kinds that are derived from those (``image_labels``
from the boxes' classes) or that add themselves to the format (kinds with a COCO hook, for ``coco``).
A plugin module registers its own format with ``@FORMATS.register("name")`` beside its kind and task.

A format with part options declares them as a dataclass (``DatasetFormat.options_class``): a part's
``options:`` mapping is checked against it when the YAML is read (an unknown key or a wrong type names
``parts.<i>.options.<key>`` and its line) and reaches :meth:`DatasetFormat.read` as ``ctx.options``.
What the published rules of a format leave out (a category the dataset does not name, a MOTChallenge row
that is not considered) goes to ``ctx.tally``, counted for the load summary (:mod:`unified.data.summary`).

Built-in formats: ``coco`` and ``yolo`` (here), ``jde`` (:mod:`unified.data.jde`), ``mot``
(:mod:`unified.data.mot`), ``crowdhuman`` (:mod:`unified.data.crowdhuman`), ``voc``
(:mod:`unified.data.voc`) and ``tags`` (:mod:`unified.data.tags`).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from unified.config import ConfigError, check, from_dict
from unified.data.kinds import LABEL_KINDS, LabelKind, label_kind
from unified.data.readers import IdentityMap, read_coco, read_yolo
from unified.data.records import ImageRecord
from unified.data.summary import PartTally
from unified.data.validate import ProblemLog
from unified.registry import Registry
from unified.structures import DatasetInfo


@dataclass
class CocoSplit:
    """A split of an annotation file and an image folder: COCO's JSON and the folder its ``file_name``
    entries are relative to, CrowdHuman's ``.odgt`` and its ``Images`` folder."""

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
        split: The split being read (``train``, ``val``, ``test``).
        format: The part's format name.
        options: The part's options (an instance of the format's ``options_class``; None without one).
        tally: Where the format counts what its published rules leave out.
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
    split: str = ""
    format: str = ""
    options: Any = None
    tally: PartTally = field(default_factory=PartTally)

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
            raise ConfigError(
                f"part {self.part!r}: a split of {{annotations, images}} is for the coco and crowdhuman formats, "
                f"not {self.format or 'this format'}: give a path or a list of paths"
            )
        return [self.resolve(s) for s in ([location] if isinstance(location, str) else location)]


class DatasetFormat(ABC):
    """Base class of dataset formats."""

    name: ClassVar[str]
    #: Kinds of label this format reads itself.
    provides: ClassVar[tuple[str, ...]] = ("boxes",)
    #: A dataclass of the part options this format takes (a part's ``options:``), or None for none.
    options_class: ClassVar[type | None] = None

    def accepts(self, kind: LabelKind) -> bool:
        """Whether a part of this format may declare ``kind`` (beyond derived kinds)."""
        return kind.name in self.provides

    def check_options(self, options: Any, class_names: Sequence[str]) -> tuple[str, str] | None:
        """A problem of the part's options with the dataset's classes, as ``(option key, message)``
        (None: none), e.g. a rename to a class the dataset does not have."""
        return None

    @abstractmethod
    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        """The records of one split location (problems go to ``ctx.log``)."""


#: A plugin module registers its formats next to its kinds and tasks: installed plugin packages' formats
#: come from the tasks' entry-point group.
FORMATS: Registry[type[DatasetFormat]] = Registry(
    "dataset format",
    default_modules=(
        __name__,
        "unified.data.jde",
        "unified.data.mot",
        "unified.data.crowdhuman",
        "unified.data.voc",
        "unified.data.tags",
    ),
    entry_point_group="unified.tasks",
)

_WHERE = re.compile(r"^<config>: key '([^']*)': (.*)$", re.S)


def part_options(fmt: DatasetFormat, raw: Any) -> Any:
    """A part's ``options:`` mapping as the format's ``options_class`` (None when it takes none).

    Raises:
        ConfigError: through :func:`unified.config.check` with the key ``options.<key>``, so the YAML loader
            names the part, the key and its line.
    """
    if fmt.options_class is None:
        check(not raw, "options", f"the {fmt.name} format takes no options")
        return None
    try:
        return from_dict(fmt.options_class, raw or {}, prefix="options")
    except ConfigError as exc:
        found = _WHERE.match(str(exc))
        key, problem = (
            (found.group(1), found.group(2)) if found else ("options", str(exc).removeprefix("<config>: "))
        )
        check(False, key, problem)


def class_named(name: str | None, class_names: Sequence[str], key: str) -> tuple[str, str] | None:
    """A problem ``(key, message)`` when an option names a class the dataset does not have."""
    if name is None or name in class_names:
        return None
    return key, f"class {name!r} is not one of the dataset's names {list(class_names)}"


def single_class(class_names: Sequence[str], name: str | None) -> int:
    """The class index a one-class format (MOTChallenge pedestrians, CrowdHuman persons) gives its objects:
    the class ``name`` (checked when the YAML was read), else the dataset's first class."""
    return list(class_names).index(name) if name is not None else 0


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


@dataclass
class CocoOptions:
    """Options of a ``coco`` part."""

    #: COCO category name -> dataset class name, for categories the file names otherwise (``{pedestrian:
    #: person}``); categories whose name (after this) is not in ``names`` are left out and counted.
    categories: dict[str, str] = field(default_factory=dict)


@FORMATS.register("coco")
class CocoFormat(DatasetFormat):
    """COCO JSON: every kind with a COCO hook (``LabelKind.coco_field``) can be read from it."""

    name = "coco"
    options_class = CocoOptions

    def accepts(self, kind: LabelKind) -> bool:
        return kind.coco_field is not None

    def check_options(self, options: CocoOptions, class_names: Sequence[str]) -> tuple[str, str] | None:
        for source, target in options.categories.items():
            problem = class_named(target, class_names, f"options.categories.{source}")
            if problem:
                return problem
        return None

    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        if isinstance(location, CocoSplit):
            ann = ctx.resolve(location.annotations)
            images = ctx.resolve(location.images) if location.images else ann.parent
        elif isinstance(location, str):
            ann = ctx.resolve(location)
            images = ann.parent
        else:
            raise ConfigError(f"part {ctx.part!r}: a coco split is {{annotations, images}} or a JSON path")
        options = ctx.options if ctx.options is not None else CocoOptions()
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
            renames=options.categories,
            tally=ctx.tally,
        )


@FORMATS.register("yolo")
class YoloFormat(DatasetFormat):
    """YOLO txt labels beside ``images/`` folders (``labels/``)."""

    name = "yolo"

    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        return read_yolo(ctx.resolve_all(location), ctx.class_names, ctx.label_kinds, ctx.log, part=ctx.part)


__all__ = [
    "CocoOptions",
    "CocoSplit",
    "DatasetFormat",
    "FORMATS",
    "PartContext",
    "SplitLocation",
    "check_part_kinds",
    "class_named",
    "part_options",
    "single_class",
]
