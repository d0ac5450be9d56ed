"""Every dataset YAML of the README's "Train on your own data" loads, on tiny files in the layout it shows.

A block is marked for this test by an HTML comment ``<!-- dataset-example: NAME -->`` on the line before
its fence; the test writes the files all the examples point at, then loads each split each example names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.data import published
from unified.data import load_dataset_yaml

ROOT = Path(__file__).resolve().parents[1]
W, H = 64, 48

#: What each example must yield: kinds of label some training record carries.
EXPECTED: dict[str, set[str]] = {
    "coco": {"boxes", "image_labels"},
    "coco-ignore": {"boxes", "ignore"},
    "yolo": {"boxes", "image_labels"},
    "official-yolo": {"boxes"},
    "mot": {"boxes", "identities", "ignore"},
    "mot15": {"boxes", "identities"},
    "jde": {"boxes", "identities"},
    "jde-lists": {"boxes", "identities"},
    "crowdhuman": {"boxes", "identities", "ignore"},
    "voc": {"boxes", "ignore"},
    "coco-subset": {"boxes"},
    "tags": {"boxes", "image_labels"},
    "yolo-seg": {"boxes", "masks"},
    "yolo-pose": {"boxes", "keypoints"},
    "mixture": {"boxes", "image_labels", "identities"},
}


def readme_examples() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.findall(r"<!-- dataset-example: ([\w-]+) -->\n```yaml\n(.*?)```", text, flags=re.S)
    return dict(found)


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (W, H), (90, 120, 150)).save(path)


def _text(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


def _coco(path: Path, files: list[str], image_labels: bool) -> None:
    images, annotations = [], []
    for index, name in enumerate(files, 1):
        entry = {"id": index, "file_name": name, "width": W, "height": H}
        if image_labels and index == 1:
            entry["labels"] = ["person", "night"]
        images.append(entry)
        annotations.append({"id": 2 * index, "image_id": index, "category_id": 1, "bbox": [4, 4, 20, 16],
                            "area": 320, "iscrowd": 0})  # fmt: skip
        annotations.append({"id": 2 * index + 1, "image_id": index, "category_id": 2, "bbox": [30, 10, 24, 30],
                            "area": 720, "iscrowd": 1})  # fmt: skip
    categories = [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}]
    _text(path, json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def write_tree(root: Path) -> None:
    """The files every README example points at, a few images each."""
    for name in ("a.jpg", "b.jpg"):
        _image(root / "coco/images/train" / name)
    _coco(root / "coco/train.json", ["a.jpg", "b.jpg"], image_labels=True)
    _image(root / "coco/v.jpg")
    _coco(root / "coco/val.json", ["v.jpg"], image_labels=False)
    for split, name in (("train", "y1"), ("val", "y2"), ("extra", "y3")):
        _image(root / f"yolo/images/{split}/{name}.jpg")
        _text(root / f"yolo/labels/{split}/{name}.txt", "0 0.5 0.5 0.25 0.4\n1 0.2 0.3 0.1 0.2\n")
    _text(root / "yolo/extra.txt", "images/extra/y3.jpg\n")
    for seq in ("seq-01", "seq-02"):
        base = root / "mot/train" / seq
        _text(base / "seqinfo.ini", f"[Sequence]\nname={seq}\nimDir=img1\nframeRate=30\nseqLength=3\n"
                                    f"imWidth={W}\nimHeight={H}\nimExt=.jpg\n")  # fmt: skip
        rows = []
        for frame in (1, 2, 3):
            _image(base / f"img1/{frame:06d}.jpg")
            rows += [f"{frame},1,{4 + frame},5,12,20,1,1,1", f"{frame},2,40,8,10,18,1,1,1"]
        _text(base / "gt/gt.txt", "\n".join(rows) + "\n")
    _image(root / "jde/images/train/j1.jpg")
    _text(root / "jde/labels_with_ids/train/j1.txt", "0 5 0.5 0.5 0.2 0.3\n0 -1 0.2 0.3 0.1 0.2\n")
    _image(root / "seg/images/train/s1.jpg")
    _text(root / "seg/labels/train/s1.txt", "1 0.1 0.1 0.5 0.1 0.5 0.6 0.1 0.6\n")
    _image(root / "pose/images/train/p1.jpg")
    _text(root / "pose/labels/train/p1.txt", "0 0.5 0.5 0.4 0.6 0.5 0.3 2 0.45 0.5 2 0.55 0.5 1\n")
    write_published(root)


def write_published(root: Path) -> None:
    """The published layouts' examples (tests/data/published.py writes each from its specification)."""
    published.mot17_sequence(root / "MOT17/train")
    published.mot15_sequence(root / "2DMOT2015/train")
    published.jde_root(root / "jde-mix")
    odgt, _ = published.crowdhuman(root / "CrowdHuman")
    _text(odgt.with_name("annotation_val.odgt"), odgt.read_text())
    published.voc_root(root / "VOCdevkit/VOC2007")
    published.coco_with_more_classes(root / "coco80")
    published.tags_csv(root / "tagged")


def test_every_marked_example_is_checked() -> None:
    assert set(readme_examples()) == set(EXPECTED)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readme-data")
    write_tree(root)
    return root


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_readme_example_loads(tree: Path, name: str) -> None:
    text = readme_examples()[name]
    path = tree / f"{name}.yaml"
    path.write_text(text)
    spec = yaml.safe_load(text)
    splits = [s for s in ("train", "val", "test") if s in spec or any(s in p for p in spec.get("parts", []))]
    assert "train" in splits and "val" in splits
    for split in splits:
        records, info = load_dataset_yaml(path, split)
        assert records, (name, split)
        assert info.class_names == spec["names"]
        if split == "train":
            carried = {kind for record in records for kind in record.labels}
            assert EXPECTED[name] <= carried, (name, carried)
            if name == "coco-ignore":
                assert any(record.labels["ignore"].any() for record in records)
            if name == "mixture":  # each part's images carry only their own kinds
                assert {r.part for r in records} == {"stills", "tracks", "more-boxes"}
                assert not any("identities" in r.labels for r in records if r.part != "tracks")
