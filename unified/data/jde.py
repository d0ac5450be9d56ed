"""JDE / FairMOT labels (``format: jde``): ``labels_with_ids`` txt files and the ``data/*.train`` lists.

A split location is an image folder, an image, or a list file of image paths, one a line: JDE's and
FairMOT's ``data/mot17.train``, ``caltech.all``, ``prw.train`` ... (any suffix but an image's), or a ``.txt``
list. A list's lines are relative to the part's ``options.root`` when it gives one (JDE's ``ccmcpe.json``
``root``, FairMOT's ``data.json``: the lines read ``MOT17/images/train/MOT17-02-SDP/img1/000001.jpg``), else
to the list's folder. Each image's labels are in the same path with the last ``images`` folder replaced by
``labels_with_ids`` and the suffix ``.txt``: rows ``class identity xc yc w h`` normalised, identity ``-1`` for
none.

JDE builds one dataset per list and offsets each list's identities, so they never meet: here identities are
numbered per list file (per part for folders and images). A JDE mixture is one part per list, each with its
sampling ``weight`` if it should not count by its images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from unified.data.formats import FORMATS, DatasetFormat, PartContext, SplitLocation
from unified.data.readers import IMAGE_SUFFIXES, list_images, listed_images, read_jde_images
from unified.data.records import ImageRecord


@dataclass
class JdeOptions:
    """Options of a ``jde`` part."""

    #: The folder the lines of a list file are relative to (JDE's ``root``); default: the list's folder.
    root: str | None = None


def is_list_file(path: Path) -> bool:
    """A file that is not an image: a list of images (``.train``, ``.all``, ``.txt`` ...)."""
    return path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES


@FORMATS.register("jde")
class JdeFormat(DatasetFormat):
    """JDE ``labels_with_ids`` txt labels (class, identity, box), from folders or JDE list files."""

    name = "jde"
    provides = ("boxes", "identities")
    options_class = JdeOptions

    def read(self, location: SplitLocation, ctx: PartContext) -> list[ImageRecord]:
        options = ctx.options if ctx.options is not None else JdeOptions()
        root = ctx.resolve(options.root) if options.root else None
        records: list[ImageRecord] = []
        for source in ctx.resolve_all(location):
            if is_list_file(source):
                images = listed_images(source, ctx.log, root)
                records += self._records(images, ctx, scope=f"{ctx.part}:{source}")
            else:
                images = list_images([source], ctx.log, f"part {ctx.part!r}")
                records += self._records(images, ctx, scope=ctx.part)
        return records

    def _records(self, images: list[Path], ctx: PartContext, scope: str) -> list[ImageRecord]:
        return read_jde_images(
            images,
            ctx.class_names,
            ctx.label_kinds,
            ctx.log,
            part=ctx.part,
            identities=ctx.identities,
            scope=scope,
        )


__all__ = ["JdeFormat", "JdeOptions", "is_list_file"]
