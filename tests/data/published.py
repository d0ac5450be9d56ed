"""Tiny datasets written by hand in the layouts the public datasets are published in.

Each writer follows the published specification of its layout (the MOT16 paper's gt.txt columns and class
table; MOT15's 10-column files without seqinfo.ini; JDE's ``data/*.train`` lists and ``labels_with_ids``;
CrowdHuman's ``.odgt``; the VOC devkit's folders and XML; COCO; an ``image,tags`` CSV) and documents the
counts a reader must find in it (``COUNTS``).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.data.helpers import write_image

W, H = 64, 48

#: What each fixture holds, as the load summary counts it (``mot`` read with ``min_visibility: 0.25``).
COUNTS = {
    "mot": {"images": 3, "boxes": 3, "ignored": 5, "identities": 1},
    "mot_sequence": {
        "kept": 3,
        "low_visibility": 3,
        "distractor": 2,
        "other_class": 2,
        "not_considered": 1,
    },
    "mot15": {"images": 3, "boxes": 6, "ignored": 0, "identities": 2, "not_considered": 1},
    "mot15_det": {"boxes": 2, "low_score": 1},
    "jde": {"images": 3, "boxes": 5, "identities": 3},
    "crowdhuman": {"images": 2, "boxes": 3, "ignored": 2, "identities": 3},
    "voc": {"images": 2, "boxes": 2, "ignored": 1, "other_category": 1},
    "coco_subset": {"images": 2, "boxes": 2, "other_category": {"car": 2, "dog": 1}},
    "tags": {"images": 2, "tags": 3},
}


def _text(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def mot17_sequence(root: Path, name: str = "MOT17-02-FRCNN") -> Path:
    """A MOT16/17 sequence: seqinfo.ini, 3 frames, gt.txt with 9 columns sorted by identity as published.

    Identity 1 is a pedestrian in every frame (its last box crosses the border: clipped), 2 a pedestrian
    10 % visible (an ignore region under ``min_visibility: 0.25``), 3 a static person (class 7) and 4 a
    reflection (class 12): distractors; 5 a car (class 3) and 7 an occluder (class 9): other classes; 6 a
    pedestrian whose consider flag is 0.
    """
    seq = root / name
    _text(seq / "seqinfo.ini", f"[Sequence]\nname={name}\nimDir=img1\nframeRate=30\nseqLength=3\n"
                               f"imWidth={W}\nimHeight={H}\nimExt=.jpg\n")  # fmt: skip
    for frame in (1, 2, 3):
        write_image(seq / "img1" / f"{frame:06d}.jpg", W, H, colour=(20 * frame, 60, 90))
    rows = [f"{f},1,{-3 if f == 3 else 4 + f},4,12,20,1,1,1" for f in (1, 2, 3)]
    rows += [f"{f},2,30,6,10,18,1,1,0.1" for f in (1, 2, 3)]
    rows += ["1,3,40,20,8,16,0,7,1", "2,4,44,24,8,16,0,12,0.5", "1,5,2,30,20,12,0,3,1"]
    rows += ["3,6,20,20,8,16,0,1,1", "2,7,50,2,6,10,0,9,1"]
    _text(seq / "gt" / "gt.txt", "\n".join(rows) + "\n")
    return seq


def mot15_sequence(root: Path, name: str = "ADL-Rundle-6") -> Path:
    """A 2D MOT 2015 sequence: no seqinfo.ini, gt.txt with 10 columns (world coordinates -1), det.txt.

    Two pedestrians in each of 3 frames and a row whose consider flag is 0; det.txt has three detections,
    one scoring 0.2 (left out under ``min_score: 0.5``).
    """
    seq = root / name
    for frame in (1, 2, 3):
        write_image(seq / "img1" / f"{frame:06d}.jpg", W, H, colour=(90, 20 * frame, 60))
    rows = [f"{f},{k},{8 * k + f},5,10,20,1,-1,-1,-1" for k in (1, 2) for f in (1, 2, 3)]
    rows.append("2,3,40,10,8,16,0,-1,-1,-1")
    _text(seq / "gt" / "gt.txt", "\n".join(rows) + "\n")
    det = ["1,-1,5,5,10,20,0.9,-1,-1,-1", "1,-1,30,5,10,20,0.2,-1,-1,-1", "2,-1,6,5,10,20,0.95,-1,-1,-1"]
    _text(seq / "det" / "det.txt", "\n".join(det) + "\n")
    return seq


def jde_root(root: Path) -> tuple[Path, Path]:
    """A JDE data root (``MOT17/images/...`` and ``Caltech/images/...`` with ``labels_with_ids``) and its
    ``data/`` folder of lists (``mot17.train``, ``caltech.train``: lines relative to the root).

    MOT17 frames carry identities 0 and 1 (twice each, and one box without identity), Caltech's identity 0:
    three identities in all, since JDE numbers each list's identities apart.
    """
    lists: dict[str, list[str]] = {"mot17": [], "caltech": []}
    labels = {
        "MOT17/images/train/MOT17-02-SDP/img1/000001.jpg": "0 0 0.3 0.5 0.2 0.4\n0 1 0.7 0.5 0.2 0.4\n",
        "MOT17/images/train/MOT17-02-SDP/img1/000002.jpg": "0 0 0.32 0.5 0.2 0.4\n0 -1 0.7 0.5 0.1 0.2\n",
        "Caltech/images/set00_V000_0001.png": "0 0 0.5 0.5 0.2 0.4\n",
    }
    for relative, rows in labels.items():
        write_image(root / relative, W, H)
        label = (root / relative.replace("images", "labels_with_ids")).with_suffix(".txt")
        _text(label, rows)
        lists["mot17" if relative.startswith("MOT17") else "caltech"].append(relative)
    data = root / "data"
    for name, lines in lists.items():
        _text(data / f"{name}.train", "\n".join(lines) + "\n")
    return root, data


def crowdhuman(root: Path) -> tuple[Path, Path]:
    """``annotation_train.odgt`` and ``Images/`` as published: two images.

    The first has two persons (one full box leaving the image) and a ``mask`` region; the second a person
    and a person marked ``extra.ignore``: three persons, two ignore regions.
    """
    ids = ["273271,c9db000d5146c15", "273271,c9db000d5146c16"]
    for name in ids:
        write_image(root / "Images" / f"{name}.jpg", W, H)

    def person(box: list[int], ignore: int = 0) -> dict:
        head = [box[0] + 2, box[1], 4, 4]
        return {"tag": "person", "fbox": box, "vbox": box, "hbox": head,
                "head_attr": {"ignore": 0, "occ": 0, "unsure": 0}, "extra": {"box_id": 0, "occ": 0, "ignore": ignore}}  # fmt: skip

    first = {"ID": ids[0], "gtboxes": [person([4, 4, 12, 30]), person([50, 10, 20, 30]),
                                       {"tag": "mask", "fbox": [30, 30, 10, 10], "vbox": [30, 30, 10, 10],
                                        "hbox": [30, 30, 10, 10], "extra": {"ignore": 1}}]}  # fmt: skip
    second = {"ID": ids[1], "gtboxes": [person([10, 8, 14, 30]), person([36, 8, 14, 30], ignore=1)]}
    odgt = _text(root / "annotation_train.odgt", json.dumps(first) + "\n" + json.dumps(second) + "\n")
    return odgt, root / "Images"


def _voc_xml(name: str, objects: list[tuple[str, int, tuple[int, int, int, int]]]) -> str:
    parts = [f"<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>{name}.jpg</filename>\n"
             f"\t<size>\n\t\t<width>{W}</width>\n\t\t<height>{H}</height>\n\t\t<depth>3</depth>\n\t</size>\n"]  # fmt: skip
    for cls, difficult, (x1, y1, x2, y2) in objects:
        parts.append(
            f"\t<object>\n\t\t<name>{cls}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
            f"\t\t<difficult>{difficult}</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymin>{y1}</ymin>\n"
            f"\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        )
    return "".join(parts) + "</annotation>\n"


def voc_root(root: Path) -> Path:
    """A VOC root (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/{train,val,trainval}.txt``).

    000001 (train) has a person, a difficult person and a dog (not a class of a ``[person, car]`` dataset);
    000002 (val) a car.
    """
    objects = {
        "000001": [
            ("person", 0, (5, 5, 20, 40)),
            ("person", 1, (30, 5, 40, 30)),
            ("dog", 0, (40, 20, 60, 45)),
        ],
        "000002": [("car", 0, (10, 10, 50, 40))],
    }
    for name, found in objects.items():
        write_image(root / "JPEGImages" / f"{name}.jpg", W, H)
        _text(root / "Annotations" / f"{name}.xml", _voc_xml(name, found))
    for split, names in (("train", ["000001"]), ("val", ["000002"]), ("trainval", ["000001", "000002"])):
        _text(root / "ImageSets" / "Main" / f"{split}.txt", "\n".join(names) + "\n")
    return root


def coco_with_more_classes(root: Path) -> Path:
    """A COCO file with the categories person, car and dog; two images, a person in each (two cars and a
    dog besides): read for ``names: [pedestrian]`` with ``categories: {person: pedestrian}``."""
    images, annotations = [], []
    for index in (1, 2):
        write_image(root / "images" / f"{index:012d}.jpg", W, H)
        images.append({"id": index, "file_name": f"{index:012d}.jpg", "width": W, "height": H})
        annotations.append({"id": 10 * index, "image_id": index, "category_id": 1, "bbox": [4, 4, 12, 24], "iscrowd": 0})  # fmt: skip
        annotations.append({"id": 10 * index + 1, "image_id": index, "category_id": 3, "bbox": [30, 20, 20, 12], "iscrowd": 0})  # fmt: skip
    annotations.append({"id": 99, "image_id": 2, "category_id": 18, "bbox": [40, 30, 10, 10], "iscrowd": 0})
    categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]
    path = root / "instances_train.json"
    return _text(path, json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def tags_csv(root: Path) -> Path:
    """``tags.csv`` with the header ``image,tags``: an image tagged ``person night``, one tagged ``car``."""
    for name in ("a.jpg", "b.jpg"):
        write_image(root / "photos" / name, W, H)
    return _text(root / "tags.csv", "image,tags\nphotos/a.jpg,person night\nphotos/b.jpg,car\n")
