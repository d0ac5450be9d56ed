"""Dataset YAML files: one experiment's data, possibly combined from several parts.

A dataset YAML names the classes, the scene labels and the parts; each part has a format, the label
kinds it provides and a location per split. Relative paths are relative to the YAML file's folder (or,
when nothing is there, to the current directory, which is how the official YOLOR data files are
written)::

    version: 1
    names: [ellipse, rectangle, triangle, star, cross]   # detection classes
    scene_labels: [striped, night, noisy]                # image labels beyond the classes
    parts:
      - name: shapes
        format: coco                                     # coco | yolo | mot | jde | a plugin's
        label_kinds: [boxes, image_labels]
        train: {annotations: shapes/train.json, images: shapes/train}
        val: {annotations: shapes/val.json, images: shapes/val}
      - name: tracks
        format: mot
        label_kinds: [boxes, identities]
        train: tracks/train                              # a sequence folder or a folder of sequences
        val: tracks/val

``label_kinds`` names registered kinds of label (``unified.data.kinds``; a plugin module listed under
``plugins:`` may register more, and formats to read them). A kind that takes dataset-level options (its
``options_class``) reads them from a top-level ``kinds:`` mapping, e.g. ``kinds: {keypoints: {...}}``;
they reach every kind method through ``DatasetInfo.kind_options``. For ``coco`` a split is ``{annotations, images}`` (or only the JSON path: images beside it); for
``yolo`` and ``jde`` an image folder, a ``.txt`` list of images, or a list of those; for ``mot`` a
folder (or list of folders). An official YOLO data file (``train``, ``val``, ``nc``, ``names``, as
``data/coco.yaml``) is accepted as it is: it becomes one ``yolo`` part with ``boxes``.

Identities are numbered per split: the training split's identities are ``0..num_identities-1`` for
the embedding classifier; validation identities are a separate numbering, only compared with each
other.
"""

from __future__ import annotations

import logging
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from unified.config import ConfigError, check, from_dict, read_yaml
from unified.data.formats import FORMATS, CocoSplit, PartContext, SplitLocation, check_part_kinds
from unified.data.kinds import INSTANCE_KIND, LABEL_KINDS, kind_order, label_kind
from unified.data.readers import IdentityMap
from unified.data.records import ImageRecord
from unified.data.validate import DataError, ProblemLog
from unified.registry import RegistryError
from unified.structures import DatasetInfo

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class PartSpec:
    """One dataset part: a format, the label kinds it provides and a location per split."""

    name: str
    format: str
    label_kinds: list[str] = field(default_factory=lambda: ["boxes"])
    train: SplitLocation = None
    val: SplitLocation = None
    test: SplitLocation = None

    def __post_init__(self) -> None:
        # ``check`` names the key, so the loader points at ``parts.<i>.<key>`` and its line.
        try:
            fmt = FORMATS.get(self.format)()
        except RegistryError as exc:
            check(False, "format", str(exc))
        for kind in self.label_kinds:
            check(
                kind in LABEL_KINDS,
                "label_kinds",
                f"label kind {kind!r} is not one of the registered kinds {LABEL_KINDS.names()} "
                "(a plugin module listed under `plugins:` may register more)",
            )
        try:
            check_part_kinds(fmt, self.label_kinds, self.name)
        except ConfigError as exc:
            check(False, "label_kinds", str(exc))


@dataclass
class DatasetSpec:
    """A whole dataset YAML."""

    names: list[str]
    parts: list[PartSpec]
    scene_labels: list[str] = field(default_factory=list)
    kinds: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = 1

    def __post_init__(self) -> None:
        if not self.names:
            raise ConfigError("'names' must list at least one class")
        every = list(self.names) + list(self.scene_labels)
        if len(set(every)) != len(every):
            raise ConfigError("class names and scene labels must all be different")
        part_names = [p.name for p in self.parts]
        if len(set(part_names)) != len(part_names):
            raise ConfigError(f"part names must be unique, got {part_names}")
        declared = {kind for part in self.parts for kind in part.label_kinds}
        for name in sorted(declared - set(self.kinds)):
            kind = label_kind(name)
            required = kind.options_class is not None and any(
                f.default is MISSING and f.default_factory is MISSING for f in fields(kind.options_class)
            )
            check(
                not required,
                f"kinds.{name}",
                f"parts declare {name!r} labels, whose options this YAML must give",
            )
        for name, options in self.kinds.items():
            try:
                kind = label_kind(name)
            except RegistryError as exc:
                check(False, f"kinds.{name}", str(exc))
            check(kind.options_class is not None, f"kinds.{name}", f"label kind {name!r} takes no options")
            try:
                kind.options(DatasetInfo(list(self.names), kind_options={name: options}))
            except ConfigError as exc:
                check(False, f"kinds.{name}", str(exc))

    @property
    def image_label_names(self) -> list[str]:
        return list(self.names) + list(self.scene_labels)


def read_dataset_spec(path: str | Path) -> DatasetSpec:
    """Read and check a dataset YAML (or an official YOLO data file).

    Raises:
        ConfigError: naming the file, line and key of a problem.
    """
    raw, lines = read_yaml(path)
    if "parts" not in raw and "names" in raw:
        raw = _from_official_yolo(raw, path)
        lines = {}
    return from_dict(DatasetSpec, raw, source=str(path), lines=lines)


def _from_official_yolo(raw: dict, path: str | Path) -> dict:
    names = raw.get("names")
    if not isinstance(names, list):
        raise ConfigError(f"{path}: key 'names' must be a list of class names")
    if "nc" in raw and raw["nc"] != len(names):
        raise ConfigError(f"{path}: key 'nc' is {raw['nc']} but 'names' lists {len(names)} classes")
    part = {"name": Path(path).stem, "format": "yolo", "label_kinds": ["boxes"]}
    for split in SPLITS:
        if raw.get(split) is not None:
            part[split] = raw[split]
    return {"names": [str(n) for n in names], "parts": [part]}


def _warn_if_unlabelled(path: Path, part: Any, split: str, records: list[ImageRecord]) -> None:
    """A part whose images all lack the instances it declares is almost always labels in the wrong place
    (or every label file empty): say so, since training on it learns that nothing is ever there."""
    if not records or INSTANCE_KIND not in part.label_kinds:
        return
    if any(len(record.labels.get(INSTANCE_KIND, ())) for record in records):
        return
    logger.warning(
        "%s: part %r, split %r: none of its %d images has a box (every label file empty, or the labels "
        "are not where the %s format looks for them)",
        path, part.name, split, len(records), part.format,
    )  # fmt: skip


def load_dataset_yaml(
    path: str | Path,
    split: str,
    skip_invalid: bool = False,
    *,
    check_images: bool = True,
) -> tuple[list[ImageRecord], DatasetInfo]:
    """Load one split of a dataset YAML: every part read, validated and combined.

    Args:
        path: The dataset YAML.
        split: ``train``, ``val`` or ``test``.
        skip_invalid: Skip bad annotations and images (logging how many per kind) instead of raising.
        check_images: Check every image header (missing, empty, truncated, wrong size).

    Returns:
        The records (``image_id`` = index in the list) and the dataset info of this split.

    Raises:
        ConfigError: for a malformed YAML.
        DataError: listing every problem in the data (the first 20 and a count), or for an empty split
            even with ``skip_invalid``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(path)
    spec = read_dataset_spec(path)
    base = path.parent
    log = ProblemLog(skip_invalid)
    identities = IdentityMap()
    records: list[ImageRecord] = []
    used_parts = 0
    for part in spec.parts:
        location = getattr(part, split)
        if location is None:
            continue
        used_parts += 1
        part_records = _read_part(part, location, spec, base, log, identities, check_images)
        if not part_records:
            log.add(
                "empty_split", f"{path}: part {part.name!r}", f"split {split!r} holds no valid image", "image"
            )
        _warn_if_unlabelled(path, part, split, part_records)
        records.extend(part_records)
    if used_parts == 0:
        log.add("empty_split", str(path), f"no part has a {split!r} split", "image")
    sequences: dict[str, str] = {}
    for record in records:
        if record.sequence is not None:
            owner = sequences.setdefault(record.sequence, record.part)
            if owner != record.part:
                raise DataError(
                    f"{path}: sequence {record.sequence!r} appears in parts {owner!r} and {record.part!r}; "
                    "sequence names must be unique within a split"
                )
    log.finish(f"{path} (split {split!r})")
    for index, record in enumerate(records):
        record.image_id = index
    kinds = {kind for record in records for kind in record.label_kinds}
    info = DatasetInfo(
        class_names=list(spec.names),
        image_label_names=spec.image_label_names,
        num_identities=len(identities),
        label_kinds=tuple(kind_order(kinds)),
        kind_options={name: dict(options) for name, options in spec.kinds.items()},
    )
    return records, info


def _read_part(
    part: PartSpec,
    location: SplitLocation,
    spec: DatasetSpec,
    base: Path,
    log: ProblemLog,
    identities: IdentityMap,
    check_images: bool,
) -> list[ImageRecord]:
    """One part's records: its format fills what it reads, then kinds it does not read are derived."""
    fmt = FORMATS.get(part.format)()
    read_kinds = [k for k in part.label_kinds if fmt.accepts(label_kind(k))]
    ctx = PartContext(
        part.name,
        read_kinds,
        list(spec.names),
        spec.image_label_names,
        base,
        log,
        identities,
        check_images,
        dict(spec.kinds),
    )
    records = fmt.read(location, ctx)
    derived = [k for k in kind_order(set(part.label_kinds)) if k not in read_kinds]
    info = ctx.info
    for record in records:
        for name in derived:
            value = label_kind(name).derive(record.labels, info)
            if value is not None:
                record.labels[name] = value
    return records


__all__ = ["CocoSplit", "DatasetSpec", "PartSpec", "SPLITS", "load_dataset_yaml", "read_dataset_spec"]
