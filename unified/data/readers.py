"""Readers for COCO JSON, YOLO txt, MOTChallenge and JDE labels, all producing :class:`ImageRecord`.

Every reader validates as it reads and reports problems to a :class:`ProblemLog` (file and line or
annotation id); a bad annotation is left out, a bad image is left out with its annotations, and the
caller decides at the end whether that is an error (the default) or a logged skip.

Formats, as read here:

- **COCO JSON**: ``images`` (``id``, ``file_name`` relative to the image folder, ``width``, ``height``),
  ``annotations`` (``image_id``, ``category_id``, ...), ``categories`` (``id``, ``name``; matched to the
  dataset's class names by name). What an annotation or image entry holds is read by the kinds of label
  the part declares (each kind's ``from_coco_annotation`` / ``from_coco_image``): ``bbox`` =
  ``[x, y, w, h]`` pixels for ``boxes``, ``track_id`` for ``identities``, and the extension
  ``"labels": ["name", ...]`` in an image entry for ``image_labels`` (names from the dataset's image label
  names, classes first, then scene labels). A plugin's kind adds its own fields the same way.
  ``iscrowd: 1`` regions are not objects and are left out, as the official YOLO converters do, unless the
  part lists the ``ignore`` kind, which keeps them as regions to leave alone (COCO's evaluation).
- **YOLO txt** (the layout of the official ``data/coco.yaml``): one ``labels/.../NAME.txt`` beside
  ``images/.../NAME.jpg`` (the last ``images`` folder of the path becomes ``labels``), rows
  ``class xc yc w h`` normalised to the image; no label file means an image without objects.
- **JDE**: like YOLO but ``labels_with_ids`` instead of ``labels`` and rows ``class identity xc yc w h``;
  identity ``-1`` means none.
- MOTChallenge is read by :mod:`unified.data.mot`; the JDE/FairMOT list files, CrowdHuman, Pascal VOC and
  image-tag lists by their own modules (:mod:`unified.data.jde`, :mod:`unified.data.crowdhuman`,
  :mod:`unified.data.voc`, :mod:`unified.data.tags`), on the helpers here.

A COCO category whose name (after the part's renames) is not one of the dataset's ``names`` is not an error:
its annotations are left out and counted (``other_category`` in the part's :class:`PartTally`), so a file is
used for a subset of its classes by naming them. So are ``iscrowd`` regions of a part without ``ignore``.

Identities are made dataset-global by :class:`IdentityMap`: MOT ids are scoped by sequence, COCO
``track_id`` by dataset part, JDE ids by list file (or part, for folders).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from unified.data.kinds import INVALID, kind_order, label_kind
from unified.data.kinds.boxes import Boxes
from unified.data.records import ImageRecord
from unified.data.summary import PartTally
from unified.data.validate import ProblemLog, check_box, check_image, is_integer_value
from unified.structures import DatasetInfo

IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


class IdentityMap:
    """Maps ``(scope, raw id)`` to dataset-global identities ``0..N-1`` in order of first use."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, int], int] = {}

    def lookup(self, scope: str, raw_id: int) -> int:
        """The global identity of ``raw_id`` in ``scope``, allocated on first use."""
        key = (scope, int(raw_id))
        if key not in self._ids:
            self._ids[key] = len(self._ids)
        return self._ids[key]

    def unique(self, scope: str) -> int:
        """A new identity that no raw id stands for (an object seen once, such as a CrowdHuman person)."""
        key = (scope, -1 - len(self._ids))  # negative raw ids never come from a file (-1 means none)
        self._ids[key] = len(self._ids)
        return self._ids[key]

    def __len__(self) -> int:
        return len(self._ids)


def read_lines(path: Path, log: ProblemLog, what: str) -> list[str] | None:
    """The lines of a text file, or None (and a ``bad_file`` problem) when it cannot be read as UTF-8 text."""
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        log.add("bad_file", str(path), f"cannot read {what}: {exc}", skips="image")
        return None


def row_numbers(fields: Sequence[str], line: str, where: str, log: ProblemLog) -> list[float] | None:
    """A label row's fields as numbers, or None (and a ``bad_row`` problem at ``where``) when one is not."""
    try:
        return [float(v) for v in fields]
    except ValueError:
        log.add("bad_row", where, f"values must be numbers: {line.strip()!r}")
        return None


class Instance(NamedTuple):
    """One object row a text format read: ``xyxy`` pixel box, class index, global identity (-1: none) and
    whether it is an ignore region (a crowd, a MOTChallenge distractor, a VOC ``difficult`` object)."""

    box: np.ndarray
    cls: int
    identity: int = -1
    ignore: bool = False


def make_record(
    path: Path,
    size: tuple[int, int],
    rows: Sequence[Instance],
    label_kinds: Iterable[str],
    tally: PartTally | None = None,
    **extra: Any,
) -> ImageRecord:
    """A record from instance rows, holding the row kinds the part declares.

    Ignore regions stay (flagged) when the part lists ``ignore``; otherwise they are left out and counted in
    ``tally`` as ``ignore_region``, never silently.
    """
    kinds = set(label_kinds)
    if "ignore" not in kinds:
        if tally is not None:
            tally.drop("ignore_region", count=sum(1 for r in rows if r.ignore))
        rows = [r for r in rows if not r.ignore]
    labels: dict[str, Any] = {}
    if "boxes" in kinds:
        boxes = np.stack([r.box for r in rows]) if rows else np.zeros((0, 4), np.float32)
        labels["boxes"] = Boxes(boxes.astype(np.float32), [r.cls for r in rows])
        if "identities" in kinds:
            labels["identities"] = np.array([-1 if r.ignore else r.identity for r in rows], dtype=np.int64)
        if "ignore" in kinds:
            labels["ignore"] = np.array([r.ignore for r in rows], dtype=bool)
    return ImageRecord(path=str(path), width=size[0], height=size[1], labels=labels, **extra)


@dataclass
class ReadContext:
    """What a kind's COCO hooks need while one file is read.

    Attributes:
        log: Where problems go.
        part: Name of the dataset part (the scope of its identities).
        identities: The split's identity allocator.
        class_index: Class name to index.
        label_index: Image label name to index.
        categories: COCO category id to name.
        size: ``(width, height)`` of the image being read.
        image_state: Scratch space for the image being read (e.g. the identities seen in it), emptied
            for every image.
        info: The dataset's names and kind options (``LabelKind.options(ctx.info)``).
        tally: What the reader leaves out on purpose (categories not in the dataset, crowd regions of a part
            without ``ignore``).
    """

    log: ProblemLog
    part: str = ""
    identities: IdentityMap = field(default_factory=lambda: IdentityMap())
    class_index: dict[str, int] = field(default_factory=dict)
    label_index: dict[str, int] = field(default_factory=dict)
    categories: dict[Any, str] = field(default_factory=dict)
    size: tuple[int, int] = (0, 0)
    image_state: dict[str, Any] = field(default_factory=dict)
    info: DatasetInfo = field(default_factory=lambda: DatasetInfo(["object"]))
    tally: PartTally = field(default_factory=PartTally)


# ---------------------------------------------------------------------------------------------- COCO


def read_coco(
    ann_file: Path,
    image_dir: Path,
    class_names: Sequence[str],
    image_label_names: Sequence[str],
    label_kinds: Sequence[str],
    log: ProblemLog,
    *,
    part: str = "",
    identities: IdentityMap | None = None,
    check_images: bool = True,
    kind_options: dict[str, dict[str, Any]] | None = None,
    renames: Mapping[str, str] | None = None,
    tally: PartTally | None = None,
) -> list[ImageRecord]:
    """Read a COCO JSON file.

    Args:
        ann_file: The JSON file.
        image_dir: Folder that ``file_name`` is relative to.
        class_names: Dataset classes; categories are matched by name.
        image_label_names: Names that ``"labels"`` entries may use.
        label_kinds: Kinds this part declares; ``track_id`` is read only with ``identities``, ``labels``
            only with ``image_labels``.
        log: Where problems go.
        part: Name of the dataset part (identity scope).
        identities: Global identity allocator (a fresh one when None).
        check_images: Check every image's header and size (cheap, but touches every file).
        kind_options: The dataset YAML's ``kinds:`` options, for the kinds' COCO hooks.
        renames: COCO category name to dataset class name, for categories named otherwise in the file.
        tally: Counts what is left out on purpose: annotations of categories that are not dataset classes
            (``other_category``, by name) and crowd regions of a part without ``ignore`` (``ignore_region``).

    Returns:
        One record per valid image, in the file's order.
    """
    try:
        data = json.loads(Path(ann_file).read_text())
    except (OSError, ValueError) as exc:
        log.add("bad_file", str(ann_file), f"cannot read COCO JSON: {exc}", skips="image")
        return []
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        log.add("bad_file", str(ann_file), "not a COCO file: no 'images' list", skips="image")
        return []
    ctx = ReadContext(
        log,
        part,
        identities if identities is not None else IdentityMap(),
        {name: i for i, name in enumerate(class_names)},
        {name: i for i, name in enumerate(image_label_names)},
        _coco_categories(data, ann_file, log, renames or {}),
        info=DatasetInfo(list(class_names), list(image_label_names), kind_options=dict(kind_options or {})),
        tally=tally if tally is not None else PartTally(),
    )
    images = _coco_images(data, ann_file, log)
    per_image = _coco_annotations_by_image(data, ann_file, images, log)
    kinds = kind_order(set(label_kinds))
    records = []
    for image_id, (i, entry) in images.items():
        where = f"{ann_file}: images[{i}] (id {image_id}, {entry['file_name']})"
        path = Path(image_dir) / str(entry["file_name"])
        expected = None
        if is_integer_value(entry.get("width")) and is_integer_value(entry.get("height")):
            expected = (int(entry["width"]), int(entry["height"]))
        size = check_image(path, where, log, expected) if check_images or expected is None else expected
        if size is None:
            continue
        ctx.size, ctx.image_state = size, {}
        labels = _coco_labels(entry, where, per_image.get(image_id, []), kinds, ctx)
        records.append(
            ImageRecord(str(path), size[0], size[1], labels, part=part, source_id=_int_or(image_id, -1))
        )
    return records


def _coco_categories(
    data: dict, ann_file: Path, log: ProblemLog, renames: Mapping[str, str]
) -> dict[Any, str]:
    """COCO category id to the dataset class name it stands for (its own name unless renamed)."""
    categories: dict[Any, str] = {}
    for i, cat in enumerate(data.get("categories") or []):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            log.add("bad_file", f"{ann_file}: categories[{i}]", "a category needs 'id' and 'name'")
            continue
        name = str(cat["name"])
        categories[cat["id"]] = renames.get(name, name)
    return categories


def _coco_images(data: dict, ann_file: Path, log: ProblemLog) -> dict[Any, tuple[int, dict]]:
    images: dict[Any, tuple[int, dict]] = {}
    for i, entry in enumerate(data["images"]):
        where = f"{ann_file}: images[{i}]"
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            log.add("bad_file", where, "an image entry needs 'id' and 'file_name'", skips="image")
            continue
        if entry["id"] in images:
            log.add("bad_file", where, f"image id {entry['id']} appears twice", skips="image")
            continue
        images[entry["id"]] = (i, entry)
    return images


def _coco_annotations_by_image(
    data: dict, ann_file: Path, images: dict[Any, tuple[int, dict]], log: ProblemLog
) -> dict[Any, list[tuple[str, dict]]]:
    per_image: dict[Any, list[tuple[str, dict]]] = defaultdict(list)
    for j, ann in enumerate(data.get("annotations") or []):
        ident = ann.get("id", None) if isinstance(ann, dict) else None
        where = f"{ann_file}: annotation id {ident}" if ident is not None else f"{ann_file}: annotations[{j}]"
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            log.add("bad_row", where, f"refers to image id {image_id!r}, which is not in 'images'")
            continue
        per_image[ann["image_id"]].append((where, ann))
    return per_image


def _coco_labels(
    entry: dict, where: str, annotations: list[tuple[str, dict]], kinds: list[str], ctx: ReadContext
) -> dict[str, Any]:
    """One image's labels: every per-instance kind reads each annotation (one that any kind rejects is
    left out whole), then every per-image kind reads the image entry (a rejected one: kind unknown)."""
    instance_kinds = [k for k in kinds if label_kind(k).coco_field == "annotation"]
    keep_crowd = any(label_kind(k).keeps_crowd for k in kinds)
    items: dict[str, list[Any]] = {k: [] for k in instance_kinds}
    for ann_where, ann in annotations if instance_kinds else []:
        if _left_out(ann, keep_crowd, ctx):
            continue
        values = {}
        for name in instance_kinds:
            value = label_kind(name).from_coco_annotation(ann, ann_where, ctx)
            if value is INVALID:
                break
            values[name] = value
        else:
            for name, value in values.items():
                items[name].append(value)
    labels = {name: label_kind(name).stack(items[name]) for name in instance_kinds}
    for name in kinds:
        if label_kind(name).coco_field == "image":
            value = label_kind(name).from_coco_image(entry, where, labels, ctx)
            if value is not INVALID:
                labels[name] = value
    return labels


def _left_out(ann: dict, keep_crowd: bool, ctx: ReadContext) -> bool:
    """Whether the published rules leave an annotation out (counted, not a problem): a category that is
    not a dataset class (a subset of the file's classes), a crowd region of a part without ``ignore``."""
    category = ann.get("category_id")
    name = ctx.categories.get(category) if isinstance(category, (int, str)) else None
    if name is not None and name not in ctx.class_index:
        ctx.tally.drop("other_category", name)
        return True
    if ann.get("iscrowd", 0) and not keep_crowd:
        ctx.tally.drop("ignore_region")
        return True
    return False


def _int_or(value: Any, default: int) -> int:
    return int(value) if is_integer_value(value) else default


# ------------------------------------------------------------------------------------------ YOLO/JDE


def list_images(sources: Sequence[Path], log: ProblemLog, where: str) -> list[Path]:
    """Image files from folders (searched recursively, following links to folders), ``.txt`` lists or
    single image paths.

    Lines of a list file are relative to the list file's folder unless absolute (``./`` allowed). A file
    listed twice is a ``duplicate_image`` problem naming both lines (with ``skip_invalid`` it is kept
    once).
    """
    found: list[Path] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            found.extend(images_under(source))
        elif source.suffix.lower() == ".txt" and source.is_file():
            found.extend(listed_images(source, log))
        elif source.suffix.lower() in IMAGE_SUFFIXES and source.exists():
            found.append(source)
        else:
            log.add(
                "bad_file",
                where,
                f"{source} is neither an image folder, a .txt list nor an image",
                skips="image",
            )
    return found


def images_under(folder: Path) -> list[Path]:
    """Every image below ``folder``, sorted, through linked folders too; a link back to a folder already
    walked (a loop) is not entered again."""
    found: list[Path] = []
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found.extend(Path(root) / name for name in files if Path(name).suffix.lower() in IMAGE_SUFFIXES)
    return sorted(found)


def listed_images(listing: Path, log: ProblemLog, base: Path | None = None) -> list[Path]:
    """The images a list file names (one path a line), once each.

    Args:
        listing: The list file.
        log: Where problems go (a file listed twice is ``duplicate_image``).
        base: The folder relative lines are joined to (default: the list file's folder).
    """
    base = listing.parent if base is None else base
    found: list[Path] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(read_lines(listing, log, "the image list") or [], start=1):
        line = line.strip()
        if not line:
            continue
        path = Path(line) if Path(line).is_absolute() else base / line
        key = os.path.normpath(path)
        if key in first_line:
            log.add(
                "duplicate_image",
                f"{listing}, line {number}",
                f"{line} is listed again (first on line {first_line[key]}); each image is read once",
                skips="image",
            )
            continue
        first_line[key] = number
        found.append(path)
    return found


def label_path_for(image: Path, label_dir_name: str) -> Path:
    """The label file of an image: the last ``images`` folder of its path replaced, suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = label_dir_name
            break
    return Path(*parts).with_suffix(".txt")


def _read_txt_labels(
    image_paths: Sequence[Path],
    class_names: Sequence[str],
    label_kinds: Sequence[str],
    log: ProblemLog,
    *,
    with_identity: bool,
    label_dir_name: str,
    part: str,
    identities: IdentityMap,
    scope: str | None = None,
) -> list[ImageRecord]:
    """Records of ``class [identity] xc yc w h`` label files; identities are numbered within ``scope``
    (default: the part)."""
    scope = part if scope is None else scope
    nc = len(class_names)
    columns = 6 if with_identity else 5
    layout = "class identity xc yc w h" if with_identity else "class xc yc w h"
    records = []
    for image in image_paths:
        size = check_image(image, str(image), log)
        if size is None:
            continue
        width, height = size
        label_file = label_path_for(image, label_dir_name)
        rows: list[Instance] = []
        lines = read_lines(label_file, log, "the label file") if label_file.is_file() else []
        if lines is None:
            continue  # its labels are unknown, so the image is left out
        seen_ids: set[int] = set()
        for number, line in enumerate(lines, start=1):
            where = f"{label_file}:{number}"
            fields = line.split()
            if not fields:
                continue
            if len(fields) != columns:
                log.add("bad_row", where, f"expected {columns} values ({layout}), found {len(fields)}")
                continue
            values = row_numbers(fields, line, where, log)
            if values is None:
                continue
            cls = values[0]
            if not is_integer_value(cls) or not 0 <= cls < nc:
                log.add("unknown_class", where, f"class {fields[0]} is not in 0..{nc - 1}")
                continue
            identity = -1
            if with_identity:
                raw = values[1]
                if not is_integer_value(raw) or raw < -1:
                    log.add("invalid_identity", where, f"identity {fields[1]} is not an integer >= -1")
                    continue
                if raw >= 0:
                    if int(raw) in seen_ids:
                        log.add("invalid_identity", where, f"identity {int(raw)} appears twice in one image")
                        continue
                    seen_ids.add(int(raw))
                    if "identities" in label_kinds:
                        identity = identities.lookup(scope, int(raw))
            xc, yc, w, h = values[-4:]
            xc, w = xc * width, w * width
            yc, h = yc * height, h * height
            box = check_box((xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2), width, height, where, log)
            if box is None:
                continue
            rows.append(Instance(box, int(cls), identity))
        records.append(make_record(image, size, rows, label_kinds, part=part))
    return records


def read_yolo(
    sources: Sequence[Path],
    class_names: Sequence[str],
    label_kinds: Sequence[str],
    log: ProblemLog,
    *,
    part: str = "",
) -> list[ImageRecord]:
    """Read YOLO txt labels for images listed by folders or ``.txt`` files (see :func:`list_images`)."""
    images = list_images(sources, log, f"part {part!r}")
    return _read_txt_labels(
        images,
        class_names,
        label_kinds,
        log,
        with_identity=False,
        label_dir_name="labels",
        part=part,
        identities=IdentityMap(),
    )


def read_jde(
    sources: Sequence[Path],
    class_names: Sequence[str],
    label_kinds: Sequence[str],
    log: ProblemLog,
    *,
    part: str = "",
    identities: IdentityMap | None = None,
) -> list[ImageRecord]:
    """Read JDE ``labels_with_ids`` txt labels (``class identity xc yc w h``, normalised) for images listed
    by folders or ``.txt`` files; identities numbered within the part."""
    images = list_images(sources, log, f"part {part!r}")
    return read_jde_images(images, class_names, label_kinds, log, part=part, identities=identities)


def read_jde_images(
    images: Sequence[Path],
    class_names: Sequence[str],
    label_kinds: Sequence[str],
    log: ProblemLog,
    *,
    part: str = "",
    identities: IdentityMap | None = None,
    scope: str | None = None,
) -> list[ImageRecord]:
    """JDE records of the given images, identities numbered within ``scope`` (default: the part)."""
    return _read_txt_labels(
        images,
        class_names,
        label_kinds,
        log,
        with_identity=True,
        label_dir_name="labels_with_ids",
        part=part,
        identities=identities if identities is not None else IdentityMap(),
        scope=scope,
    )


__all__ = [
    "IMAGE_SUFFIXES",
    "IdentityMap",
    "Instance",
    "ReadContext",
    "images_under",
    "label_path_for",
    "list_images",
    "listed_images",
    "make_record",
    "read_coco",
    "read_jde",
    "read_jde_images",
    "read_lines",
    "read_yolo",
]
