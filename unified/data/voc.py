"""Pascal VOC (``format: voc``): a VOC root as published (``VOCdevkit/VOC2007``, ``VOC2012``).

A VOC root holds ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg`` and ``ImageSets/Main/<set>.txt`` (one
image id a line). A split location is a root, read with the image set of the split's name
(``train: VOC2007`` reads ``ImageSets/Main/train.txt``), or an image-set file itself
(``VOC2007/ImageSets/Main/trainval.txt``), or a list of those (VOC2007 + VOC2012 ``trainval``).

An annotation's ``<object>`` has ``<name>`` (matched to the dataset's ``names``; objects of other classes
are left out and counted, so a subset of the 20 classes needs only its names), ``<difficult>`` and
``<bndbox>`` ``xmin ymin xmax ymax`` in VOC's 1-based pixel coordinates (the box is ``[xmin - 1, ymin - 1,
xmax, ymax]`` in 0-based pixel edges). VOC's evaluation does not count ``difficult`` objects either way;
``options.difficult: ignore`` (the default) makes them ignore regions (left out and counted for a part
that does not list ``ignore``), ``keep`` makes them ordinary objects. Problems name ``file:line`` of the
``<object>``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from unified.data.formats import FORMATS, DatasetFormat, PartContext, SplitLocation
from unified.data.readers import Instance, make_record, read_lines
from unified.data.records import ImageRecord
from unified.data.validate import check_box, check_image

_OBJECT = re.compile(r"<object[\s>]")


@dataclass
class VocOptions:
    """Options of a ``voc`` part."""

    #: ``ignore``: ``difficult`` objects are ignore regions; ``keep``: they are objects like the rest.
    difficult: Literal["ignore", "keep"] = "ignore"


@FORMATS.register("voc")
class VocFormat(DatasetFormat):
    """Pascal VOC XML annotations with their image sets."""

    name = "voc"
    provides = ("boxes", "ignore")
    options_class = VocOptions

    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        options = ctx.options if ctx.options is not None else VocOptions()
        records: list[ImageRecord] = []
        for source in ctx.resolve_all(location):
            found = image_set(source, ctx.split)
            if found is None:
                ctx.log.add(
                    "bad_file",
                    str(source),
                    f"not a VOC root (with ImageSets/Main/{ctx.split}.txt) nor an ImageSets/Main/<set>.txt file",
                    skips="image",
                )
                continue
            root, listing = found
            for number, line in enumerate(read_lines(listing, ctx.log, "the image set") or [], start=1):
                if line.split():
                    record = _read_image(root, line.split()[0], f"{listing}:{number}", options, ctx)
                    if record is not None:
                        records.append(record)
        return records


def image_set(source: Path, split: str) -> tuple[Path, Path] | None:
    """The VOC root and image-set file a location names (None: it names neither)."""
    if source.is_dir():
        listing = source / "ImageSets" / "Main" / f"{split}.txt"
        return (source, listing) if listing.is_file() else None
    if source.is_file() and source.parent.name == "Main" and source.parent.parent.name == "ImageSets":
        return source.parents[2], source
    return None


def _read_image(
    root: Path, image_id: str, where: str, options: VocOptions, ctx: PartContext
) -> ImageRecord | None:
    """One image of the set with its objects (None: its annotation or image is unusable, reported)."""
    xml = root / "Annotations" / f"{image_id}.xml"
    try:
        text = xml.read_text()
        tree = ET.fromstring(text)
    except (OSError, UnicodeDecodeError, ET.ParseError) as exc:
        ctx.log.add(
            "bad_file", f"{xml} (listed at {where})", f"cannot read the VOC annotation: {exc}", "image"
        )
        return None
    path = root / "JPEGImages" / f"{image_id}.jpg"
    if not path.exists() and tree.findtext("filename"):
        path = root / "JPEGImages" / str(tree.findtext("filename")).strip()
    size = check_image(path, str(xml), ctx.log, _declared_size(tree))
    if size is None:
        return None
    lines = [text.count("\n", 0, m.start()) + 1 for m in _OBJECT.finditer(text)]
    objects = tree.findall("object")
    rows = []
    for i, obj in enumerate(objects):
        place = f"{xml}:{lines[i]}" if len(lines) == len(objects) else f"{xml}: object {i + 1}"
        instance = _instance(obj, place, size, options, ctx)
        if instance is not None:
            rows.append(instance)
    return make_record(path, size, rows, ctx.label_kinds, ctx.tally, part=ctx.part)


def _declared_size(tree: ET.Element) -> tuple[int, int] | None:
    """The ``<size>`` an annotation declares (None: absent or zero, as some VOC 2012 files have)."""
    try:
        width, height = int(tree.findtext("size/width") or 0), int(tree.findtext("size/height") or 0)
    except ValueError:
        return None
    return (width, height) if width > 0 and height > 0 else None


def _instance(
    obj: ET.Element, where: str, size: tuple[int, int], options: VocOptions, ctx: PartContext
) -> Instance | None:
    """One ``<object>`` as an object or an ignore region (None: another class, counted, or a problem)."""
    name = (obj.findtext("name") or "").strip()
    if name not in ctx.class_names:
        ctx.tally.drop("other_category", name or "(no name)")
        return None
    try:
        difficult = int(float(obj.findtext("difficult") or 0)) == 1
        xmin, ymin, xmax, ymax = (
            float(obj.findtext(f"bndbox/{k}") or "") for k in ("xmin", "ymin", "xmax", "ymax")
        )
    except ValueError:
        ctx.log.add(
            "bad_row",
            where,
            f"{name}: <bndbox> needs the numbers xmin, ymin, xmax, ymax (and <difficult> 0 or 1)",
        )
        return None
    box = check_box((xmin - 1, ymin - 1, xmax, ymax), size[0], size[1], where, ctx.log)
    if box is None:
        return None
    return Instance(box, ctx.class_names.index(name), -1, ignore=difficult and options.difficult == "ignore")


__all__ = ["VocFormat", "VocOptions", "image_set"]
