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
        format: coco                  # coco | yolo | mot | jde | crowdhuman | voc | tags | a plugin's
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
``yolo`` and ``jde`` an image folder, a ``.txt`` list of images, or a list of those (``jde`` also JDE's
``data/*.train`` lists); for ``mot`` a folder (or list of folders); for ``crowdhuman`` ``{annotations:
X.odgt, images: DIR}``; for ``voc`` a VOC root or an ``ImageSets/Main/<set>.txt``; for ``tags`` a CSV
``image,tags``. An official YOLO data file (``train``, ``val``, ``nc``, ``names``, as ``data/coco.yaml``)
is accepted as it is: it becomes one ``yolo`` part with ``boxes``.

A part may also give:

- ``options:`` the format's part options (its ``DatasetFormat.options_class``: ``mot`` ``classes``,
  ``min_visibility`` ...; ``jde`` ``root``; ``crowdhuman`` ``box``; ``voc`` ``difficult``; ``coco``
  ``categories`` renames), checked when the YAML is read;
- ``weight:`` its share of the training samples relative to the other parts' weights (JDE's weighted
  mixture of datasets): a part of 100 images with weight 1 and one of 10 000 with weight 1 are drawn
  equally often. Either every part with a ``train`` split gives one or none does; without weights every
  image is drawn once an epoch, as before (each part's share is its share of the images).

Identities are numbered per split: the training split's identities are ``0..num_identities-1`` for
the embedding classifier; validation identities are a separate numbering, only compared with each
other.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from unified.config import ConfigError, check, from_dict, read_yaml
from unified.data.formats import (
    FORMATS,
    CocoSplit,
    PartContext,
    SplitLocation,
    check_part_kinds,
    part_options,
)
from unified.data.kinds import INSTANCE_KIND, LABEL_KINDS, kind_order, label_kind
from unified.data.readers import IdentityMap
from unified.data.records import ImageRecord
from unified.data.sampling import part_shares, sample_weights
from unified.data.summary import PartSummary, PartTally, summarise
from unified.data.validate import DataError, ProblemLog
from unified.registry import RegistryError
from unified.structures import DatasetInfo

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class PartSpec:
    """One dataset part: a format, the label kinds it provides, a location per split, the format's options
    (``options``: a mapping in the YAML, the format's ``options_class`` once read) and its sampling
    ``weight``."""

    name: str
    format: str
    label_kinds: list[str] = field(default_factory=lambda: ["boxes"])
    train: SplitLocation = None
    val: SplitLocation = None
    test: SplitLocation = None
    options: Any = None
    weight: float | None = None

    def __post_init__(self) -> None:
        # ``check`` names the key, so the loader points at ``parts.<i>.<key>`` and its line.
        try:
            fmt = FORMATS.get(self.format)()
        except RegistryError as exc:
            check(False, "format", str(exc))
        check(
            self.weight is None or self.weight > 0,
            "weight",
            "must be a positive number (a share of the samples)",
        )
        if fmt.options_class is None or not isinstance(self.options, fmt.options_class):
            self.options = part_options(fmt, self.options)
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

        weighted = [p.name for p in self.parts if p.train is not None and p.weight is not None]
        for i, part in enumerate(self.parts):
            check(
                not weighted or part.train is None or part.weight is not None,
                f"parts.{i}",
                f"part {part.name!r} gives no weight while {weighted} do: give every part with a train split a "
                "weight (the shares are relative to each other) or none (shares by image count)",
            )
            problem = FORMATS.get(part.format)().check_options(part.options, list(self.names))
            if problem is not None:
                check(False, f"parts.{i}.{problem[0]}", problem[1])

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


@dataclass
class DatasetSplit:
    """One split of a dataset YAML as loaded (unpacks as ``records, info``).

    Attributes:
        records: The images (``image_id`` = index in the list).
        info: The dataset info of this split.
        parts: What each part gave (images, boxes, identities, tags, ignore regions, what was left out).
        weights: Each part's ``weight`` (None where it gives none).
    """

    records: list[ImageRecord]
    info: DatasetInfo
    parts: list[PartSummary]
    weights: dict[str, float | None]

    def sample_weights(self) -> list[float] | None:
        """One sampling weight per record (None: no part has a weight; shuffle as usual)."""
        return sample_weights(self.records, self.weights)

    def __iter__(self) -> Iterator[Any]:
        """``records, info = load_dataset_yaml(...)``, as it has always been called."""
        return iter((self.records, self.info))

    def __getitem__(self, index: int) -> Any:
        """``load_dataset_yaml(...)[0]``: the records (``[1]``: the info), as of the tuple it was."""
        return (self.records, self.info)[index]


def load_dataset_yaml(
    path: str | Path,
    split: str,
    skip_invalid: bool = False,
    *,
    check_images: bool = True,
) -> DatasetSplit:
    """Load one split of a dataset YAML: every part read, validated and combined.

    Args:
        path: The dataset YAML.
        split: ``train``, ``val`` or ``test``.
        skip_invalid: Skip bad annotations and images (logging how many per kind) instead of raising.
        check_images: Check every image header (missing, empty, truncated, wrong size).

    Returns:
        The split: it unpacks as ``records, info`` (``image_id`` = index in the list) and also holds the
        per-part summary and the parts' sampling weights.

    Raises:
        ConfigError: for a malformed YAML.
        DataError: listing every problem in the data (the first 20 and a count), or for an empty split
            even with ``skip_invalid``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(path)
    spec = read_dataset_spec(path)
    log = ProblemLog(skip_invalid)
    identities = IdentityMap()
    records: list[ImageRecord] = []
    summaries: list[PartSummary] = []
    for part in spec.parts:
        location = getattr(part, split)
        if location is None:
            continue
        tally = PartTally()
        reading = _Reading(spec, path.parent, log, identities, check_images, split, tally)
        part_records = _read_part(part, location, reading)
        if not part_records:
            log.add(
                "empty_split", f"{path}: part {part.name!r}", f"split {split!r} holds no valid image", "image"
            )
        _warn_if_unlabelled(path, part, split, part_records)
        records.extend(part_records)
        summaries.append(summarise(part.name, split, part.format, part_records, tally))
    if not summaries:
        log.add("empty_split", str(path), f"no part has a {split!r} split", "image")
    _check_sequences(path, records)
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
    weights = {p.name: p.weight for p in spec.parts if getattr(p, split) is not None}
    if split == "train":
        shares = part_shares(Counter(r.part for r in records), weights)
        for summary in summaries:
            summary.share = shares.get(summary.part, 0.0)
    return DatasetSplit(records, info, summaries, weights)


def _check_sequences(path: Path, records: list[ImageRecord]) -> None:
    """Sequence names are unique within a split (a tracker's results are keyed by them)."""
    sequences: dict[str, str] = {}
    for record in records:
        if record.sequence is not None:
            owner = sequences.setdefault(record.sequence, record.part)
            if owner != record.part:
                raise DataError(
                    f"{path}: sequence {record.sequence!r} appears in parts {owner!r} and {record.part!r}; "
                    "sequence names must be unique within a split"
                )


@dataclass
class _Reading:
    """What every part of one split is read with."""

    spec: DatasetSpec
    base: Path
    log: ProblemLog
    identities: IdentityMap
    check_images: bool
    split: str
    tally: PartTally


def _read_part(part: PartSpec, location: SplitLocation, reading: _Reading) -> list[ImageRecord]:
    """One part's records: its format fills what it reads, then kinds it does not read are derived."""
    fmt = FORMATS.get(part.format)()
    read_kinds = [k for k in part.label_kinds if fmt.accepts(label_kind(k))]
    spec = reading.spec
    ctx = PartContext(
        part.name,
        read_kinds,
        list(spec.names),
        spec.image_label_names,
        reading.base,
        reading.log,
        reading.identities,
        reading.check_images,
        dict(spec.kinds),
        split=reading.split,
        format=part.format,
        options=part.options,
        tally=reading.tally,
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


__all__ = [
    "CocoSplit",
    "DatasetSpec",
    "DatasetSplit",
    "PartSpec",
    "SPLITS",
    "load_dataset_yaml",
    "read_dataset_spec",
]
