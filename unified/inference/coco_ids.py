"""The identifiers a COCO results file uses: the source's own ``image_id`` and ``category_id``.

pycocotools matches results to ground truth by ``image_id`` and ``category_id``, so a ``predictions.json``
that is to be scored against a COCO annotation file must use that file's ids, not our running image index
and 0-based class index. :class:`CocoIds` gives them:

* from a COCO annotation file (``unified predict --coco-json FILE``): each image's ``id`` by its
  ``file_name`` (the path relative to the images folder, or its last part), each class's category ``id`` by
  its name;
* without one: an image whose file name is a number (COCO's ``000000397133.jpg``) has that number as its
  id, as the COCO tools and the YOLO scripts read it; any other image has its running index; categories are
  the class indices (``categories.json`` names them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unified.config import ConfigError
from unified.inference.sources import Frame


class CocoIds:
    """Maps frames and class indices to the ids of a COCO results file."""

    def __init__(
        self,
        image_ids: dict[str, int] | None = None,
        category_ids: Sequence[int] | None = None,
        source: str = "",
    ) -> None:
        self.image_ids = image_ids
        self.category_ids = list(category_ids) if category_ids is not None else None
        self.source = source

    @classmethod
    def from_annotations(cls, path: str | Path, class_names: Sequence[str]) -> CocoIds:
        """Read the ids of a COCO annotation file; every class of the model must be one of its categories.

        Raises:
            ConfigError: the file is unreadable or not COCO, or a class has no category of that name.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            images = {str(entry["file_name"]): int(entry["id"]) for entry in data["images"]}
            categories = {str(entry["name"]): int(entry["id"]) for entry in data["categories"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--coco-json {path}: not a readable COCO annotation file ({exc!r})") from None
        missing = [name for name in class_names if name not in categories]
        if missing:
            raise ConfigError(
                f"--coco-json {path}: the model's classes {missing} are not categories of the file "
                f"(it has {sorted(categories)[:10]}{' ...' if len(categories) > 10 else ''})"
            )
        by_name = dict(images)
        by_name.update({Path(name).name: image_id for name, image_id in images.items()})
        return cls(by_name, [categories[name] for name in class_names], str(path))

    def image_id(self, frame: Frame) -> int:
        """The frame's COCO image id.

        Raises:
            ConfigError: an annotation file is given and does not list the image.
        """
        if frame.is_video:
            return frame.index
        path = Path(frame.path)
        if self.image_ids is not None:
            for key in (path.as_posix(), path.name):
                if key in self.image_ids:
                    return self.image_ids[key]
            raise ConfigError(f"--coco-json {self.source}: the image {frame.path} is not in its 'images'")
        return int(path.stem) if path.stem.isdigit() else frame.index

    def category_id(self, class_index: int) -> int:
        """The COCO category id of a class index."""
        return self.category_ids[class_index] if self.category_ids is not None else class_index

    def apply(self, frame: Frame, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``records`` (from :func:`~unified.inference.writers.instance_records`) with the source's ids."""
        image_id = self.image_id(frame)
        for record in records:
            record["image_id"] = image_id
            if "category_id" in record:
                record["category_id"] = self.category_id(int(record["category_id"]))
        return records


__all__ = ["CocoIds"]
