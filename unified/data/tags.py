"""Image-tag lists (``format: tags``): the form multi-label classification sets are published in.

A split location is a CSV file (or a list of them) whose header is ``image,tags``; each row names an image,
relative to the CSV's folder unless absolute, and its tags separated by spaces (none: an image known to carry
no tag)::

    image,tags
    photos/0001.jpg,person night
    photos/0002.jpg,car

The tag vocabulary is the dataset YAML's: its ``names`` and ``scene_labels``; a tag outside it is an
``unknown_label`` problem naming ``file:line``. The part provides ``image_labels`` only (no boxes), so it
trains the tasks that read image labels (``jdc``) in a mixture with a part that has boxes.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from unified.data.formats import FORMATS, DatasetFormat, PartContext, SplitLocation
from unified.data.readers import read_lines
from unified.data.records import ImageRecord
from unified.data.validate import check_image

HEADER = ("image", "tags")


@FORMATS.register("tags")
class TagsFormat(DatasetFormat):
    """A CSV of image paths and their space-separated tags."""

    name = "tags"
    provides = ("image_labels",)

    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        records: list[ImageRecord] = []
        for listing in ctx.resolve_all(location):
            records.extend(read_tags(listing, ctx))
        return records


def read_tags(listing: Path, ctx: PartContext) -> list[ImageRecord]:
    """The records of one tag CSV (problems go to ``ctx.log``)."""
    lines = read_lines(listing, ctx.log, "the tag list")
    if lines is None:
        return []
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    header = tuple(cell.strip().lstrip("\ufeff") for cell in rows[0]) if rows else ()  # a BOM from Excel
    if header != HEADER:
        ctx.log.add(
            "bad_file",
            f"{listing}:1",
            f"the header must be {','.join(HEADER)}, found {','.join(header)!r}",
            "image",
        )
        return []
    index = {name: i for i, name in enumerate(ctx.image_label_names)}
    records: list[ImageRecord] = []
    first_line: dict[str, int] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{listing}:{number}"
        if len(row) != 2:
            ctx.log.add("bad_row", where, f"expected 2 values (image,tags), found {len(row)}", skips="image")
            continue
        path = Path(row[0].strip())
        path = path if path.is_absolute() else listing.parent / path
        key = os.path.normpath(path)
        if key in first_line:
            ctx.log.add(
                "duplicate_image",
                where,
                f"{row[0]} is listed again (first on line {first_line[key]})",
                "image",
            )
            continue
        first_line[key] = number
        size = check_image(path, where, ctx.log)
        if size is None:
            continue
        labels = _tags(row[1], where, index, ctx)
        records.append(ImageRecord(str(path), size[0], size[1], {"image_labels": labels}, part=ctx.part))
    return records


def _tags(text: str, where: str, index: dict[str, int], ctx: PartContext) -> np.ndarray:
    """The tag indices of one row; a tag outside the vocabulary is an ``unknown_label`` problem."""
    found = []
    for tag in text.split():
        if tag not in index:
            ctx.log.add(
                "unknown_label",
                where,
                f"tag {tag!r} is not one of the dataset's names and scene_labels {list(index)}",
            )
            continue
        found.append(index[tag])
    return np.array(sorted(set(found)), dtype=np.int64)


__all__ = ["HEADER", "TagsFormat", "read_tags"]
