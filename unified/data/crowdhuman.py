"""CrowdHuman (``format: crowdhuman``): ``annotation_train.odgt`` / ``annotation_val.odgt`` as published.

A split is ``{annotations: annotation_train.odgt, images: Images}``. An ``.odgt`` file holds one JSON object
a line: ``{"ID": "273271,c9db000d5146c15", "gtboxes": [...]}``, the image being ``images/<ID>.jpg``. Each
entry of ``gtboxes`` has a ``tag`` (``person``, or ``mask`` for a crowd, a reflection or a poster: a region
to leave alone) and three ``[x, y, w, h]`` pixel boxes: ``fbox`` (the full body, amodal: it may leave the
image and is clipped), ``vbox`` (the visible part) and ``hbox`` (the head). The part chooses one with
``options.box`` (``full``, ``visible``, ``head``). An entry whose ``extra.ignore`` is 1 (and, for heads,
``head_attr.ignore``), and every ``mask`` entry, is an ignore region: kept as such when the part lists
``ignore``, else left out and counted, as FairMOT's label generator leaves them out.

Every person is its own identity (CrowdHuman has no tracks; FairMOT trains its embedding on them so), and
becomes the class ``options.class_name`` (default: the dataset's first class).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from unified.config import ConfigError
from unified.data.formats import (
    FORMATS,
    CocoSplit,
    DatasetFormat,
    PartContext,
    SplitLocation,
    class_named,
    single_class,
)
from unified.data.readers import Instance, make_record, read_lines
from unified.data.records import ImageRecord
from unified.data.validate import check_box, check_image

#: ``options.box`` -> the field of a ``gtboxes`` entry.
BOX_FIELDS = {"full": "fbox", "visible": "vbox", "head": "hbox"}
TAGS = ("person", "mask")


@dataclass
class CrowdHumanOptions:
    """Options of a ``crowdhuman`` part."""

    #: Which box of a person is the object: ``full`` (``fbox``), ``visible`` (``vbox``), ``head`` (``hbox``).
    box: Literal["full", "visible", "head"] = "full"
    #: The dataset class persons become; default the first class.
    class_name: str | None = None


@FORMATS.register("crowdhuman")
class CrowdHumanFormat(DatasetFormat):
    """CrowdHuman ``.odgt`` annotations."""

    name = "crowdhuman"
    provides = ("boxes", "identities", "ignore")
    options_class = CrowdHumanOptions

    def check_options(self, options: CrowdHumanOptions, class_names: list[str]) -> tuple[str, str] | None:
        return class_named(options.class_name, class_names, "options.class_name")

    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        if not isinstance(location, CocoSplit) or location.images is None:
            raise ConfigError(
                f"part {ctx.part!r}: a crowdhuman split is {{annotations: annotation_train.odgt, images: Images}}"
            )
        odgt, images = ctx.resolve(location.annotations), ctx.resolve(location.images)
        options = ctx.options if ctx.options is not None else CrowdHumanOptions()
        records = []
        for number, line in enumerate(read_lines(odgt, ctx.log, "the .odgt file") or [], start=1):
            if line.strip():
                record = _image_record(line, f"{odgt}:{number}", images, options, ctx)
                if record is not None:
                    records.append(record)
        return records


def _image_record(
    line: str, where: str, images: Path, options: CrowdHumanOptions, ctx: PartContext
) -> ImageRecord | None:
    """One ``.odgt`` line's image and its boxes (None: the line or the image is unusable, reported)."""
    try:
        entry = json.loads(line)
    except ValueError as exc:
        ctx.log.add("bad_row", where, f"not a JSON object: {exc}", skips="image")
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("ID"), str):
        ctx.log.add("bad_row", where, 'a line needs an "ID" string (the image\'s name)', skips="image")
        return None
    boxes = entry.get("gtboxes", [])
    if not isinstance(boxes, list):
        ctx.log.add("bad_row", where, f"gtboxes is {type(boxes).__name__}, not a list", skips="image")
        return None
    path = images / f"{entry['ID']}.jpg"
    size = check_image(path, where, ctx.log)
    if size is None:
        return None
    target = single_class(ctx.class_names, options.class_name)
    rows = []
    for j, box in enumerate(boxes):
        instance = _instance(box, f"{where}: gtboxes[{j}]", size, target, options, ctx)
        if instance is not None:
            rows.append(instance)
    return make_record(path, size, rows, ctx.label_kinds, ctx.tally, part=ctx.part)


def _flag(entry: dict, section: str) -> bool:
    extra = entry.get(section)
    return isinstance(extra, dict) and extra.get("ignore") == 1


def _instance(
    entry: Any, where: str, size: tuple[int, int], target: int, options: CrowdHumanOptions, ctx: PartContext
) -> Instance | None:
    """One ``gtboxes`` entry as an object or an ignore region (None: a problem, reported)."""
    if not isinstance(entry, dict) or entry.get("tag") not in TAGS:
        tag = entry.get("tag") if isinstance(entry, dict) else entry
        ctx.log.add("bad_row", where, f"tag {tag!r} is not one of {list(TAGS)}")
        return None
    key = BOX_FIELDS[options.box]
    xywh = entry.get(key)
    if not isinstance(xywh, list) or len(xywh) != 4 or not all(_is_number(v) for v in xywh):
        ctx.log.add("bad_row", where, f"{key} {xywh!r} is not a list of 4 numbers [x, y, w, h]")
        return None
    x, y, w, h = (float(v) for v in xywh)
    box = check_box((x, y, x + w, y + h), size[0], size[1], where, ctx.log, clip_outside=True)
    if box is None:
        return None
    ignore = (
        entry["tag"] == "mask"
        or _flag(entry, "extra")
        or (options.box == "head" and _flag(entry, "head_attr"))
    )
    if ignore or "identities" not in ctx.label_kinds:
        return Instance(box, target, -1, ignore=ignore)
    return Instance(box, target, ctx.identities.unique(ctx.part))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


__all__ = ["BOX_FIELDS", "CrowdHumanFormat", "CrowdHumanOptions"]
