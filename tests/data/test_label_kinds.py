"""The label-kind contract, generated from the registry: every registered kind (the built-in ones and the
test plugin's) survives the geometry of augmentation, joins, collates and moves to a device."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unified.data import augment as aug
from unified.data.dataset import MultiTaskDataset, batch_to_device, collate
from unified.data.kinds import LABEL_KINDS, RESERVED_NAMES, LabelKind, kind_order, label_kind
from unified.data.records import ImageRecord
from unified.registry import RegistryError
from unified.structures import DatasetInfo

PLUGINS = ("tests.plugins.landmark_task", "unified.tasks.pose", "unified.tasks.segment")


def all_kinds() -> list[str]:
    for plugin in PLUGINS:
        importlib.import_module(plugin)
    return LABEL_KINDS.names()


INFO = DatasetInfo(class_names=["a", "b", "c"], image_label_names=["a", "b", "c", "scene"], num_identities=40)
SIZE = (80, 60)


def with_requirements(name: str) -> list[str]:
    """``name`` and every kind it needs, in dependency order."""
    needed: set[str] = set()

    def visit(kind: str) -> None:
        needed.add(kind)
        for required in LABEL_KINDS.get(kind).requires:
            visit(required)

    visit(name)
    return kind_order(needed)


def example_labels(names: list[str], size: tuple[int, int], rng: np.random.Generator) -> dict:
    labels: dict = {}
    for name in names:
        labels[name] = label_kind(name).example(labels, size, INFO, rng)
    return labels


def sample_tensors(labels: dict, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    boxes = labels.get("boxes")
    n = label_kind("boxes").count(boxes) if boxes is not None else 0
    return {name: label_kind(name).to_sample(value, n, size, INFO) for name, value in labels.items()}


def assert_same(a: dict, b: dict, size: tuple[int, int], atol: float = 1e-5) -> None:
    ta, tb = sample_tensors(a, size), sample_tensors(b, size)
    assert ta.keys() == tb.keys()
    for name in ta:
        torch.testing.assert_close(ta[name], tb[name], atol=atol, rtol=0, equal_nan=True, msg=name)


def random_affine(rng: np.random.Generator) -> np.ndarray:
    cfg = aug.AugmentConfig(degrees=20.0, shear=5.0, scale=0.3, translate=0.1, perspective=0.0005)
    return aug.random_matrix(cfg, rng, SIZE, SIZE)


@pytest.mark.parametrize("kind", all_kinds())
def test_flipping_twice_gives_the_labels_back(kind):
    labels = example_labels(with_requirements(kind), SIZE, np.random.default_rng(0))
    sample = aug.Augmented(torch.zeros(3, SIZE[1], SIZE[0]), labels)
    for horizontal in (True, False):
        once = aug.flip(sample, horizontal, INFO)
        assert_same(aug.flip(once, horizontal, INFO).labels, labels, SIZE)


@pytest.mark.parametrize("kind", all_kinds())
def test_transforms_compose_and_invert_exactly(kind):
    rng = np.random.default_rng(1)
    labels = example_labels(with_requirements(kind), SIZE, rng)
    first, second = random_affine(rng), random_affine(rng)
    # A box becomes the enclosing box of its transformed corners, so boxes compose exactly only through
    # axis-aligned matrices (below); every other kind must compose through any perspective.
    anchor = {k: v for k, v in labels.items() if k == "boxes"}
    others = {k: v for k, v in labels.items() if k != "boxes"}
    both = aug.transform_labels(aug.transform_labels(others, first), second)
    direct = aug.transform_labels(others, second @ first)
    back = aug.transform_labels(aug.transform_labels(others, first), np.linalg.inv(first))
    assert_same({**anchor, **both}, {**anchor, **direct}, SIZE, atol=1e-4)
    assert_same({**anchor, **back}, labels, SIZE, atol=1e-4)
    axis_aligned = np.array([[1.3, 0.0, 7.0], [0.0, 0.8, -3.0], [0.0, 0.0, 1.0]])
    there_and_back = aug.transform_labels(
        aug.transform_labels(labels, axis_aligned), np.linalg.inv(axis_aligned)
    )
    assert_same(there_and_back, labels, SIZE)


@pytest.mark.parametrize("kind", all_kinds())
def test_a_warp_that_keeps_everything_inside_is_the_transform(kind):
    labels = example_labels(with_requirements(kind), SIZE, np.random.default_rng(2))
    big = (SIZE[0] + 40, SIZE[1] + 40)
    shift = np.array([[1.0, 0.0, 20.0], [0.0, 1.0, 20.0], [0.0, 0.0, 1.0]])
    warped = {name: label_kind(name).warp(value, shift, big) for name, value in labels.items()}
    assert_same(warped, aug.transform_labels(labels, shift), big)


@pytest.mark.parametrize("kind", all_kinds())
def test_per_instance_kinds_select_and_join_rows_with_their_boxes(kind):
    target = label_kind(kind)
    rng = np.random.default_rng(3)
    labels = example_labels(with_requirements(kind), SIZE, rng)
    value = labels[kind]
    if not target.per_instance:
        joined = target.concat([value, value])
        assert target.check(joined, 0) is None
        return
    n = target.count(value)
    keep = np.arange(n) % 2 == 0
    assert target.count(target.select(value, keep)) == int(keep.sum())
    assert target.count(target.concat([value, value])) == 2 * n
    assert target.check(value, n) is None
    if kind != "boxes":  # the boxes define the row count of the others
        assert target.check(value, n + 1) is not None


def _write_records(tmp_path: Path, names: list[str], count: int = 6) -> list[ImageRecord]:
    rng = np.random.default_rng(4)
    records = []
    for i in range(count):
        size = (96, 72) if i % 2 else (72, 96)
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(str(path), size[0], size[1], example_labels(names, size, rng), image_id=i))
    return records


@pytest.mark.parametrize("kind", all_kinds())
def test_every_kind_survives_the_pipeline_collates_and_moves(tmp_path, kind):
    names = with_requirements(kind)
    records = _write_records(tmp_path, names)
    info = DatasetInfo(INFO.class_names, INFO.image_label_names, INFO.num_identities, tuple(names))
    hyp = aug.AugmentConfig(degrees=10, shear=3, mosaic=1.0, mixup=0.5, flipud=0.5, fliplr=0.5)
    torch.manual_seed(0)
    for augment in (True, False):
        dataset = MultiTaskDataset(records, 64, augment=augment, hyp=hyp, info=info)
        samples = [dataset[i] for i in range(len(dataset))]
        for sample in samples:
            assert set(sample["labels"]) == set(names) and all(sample["label_mask"].values())
            rows = len(sample["labels"]["boxes"]) if "boxes" in names else 0
            for name in names:
                if label_kind(name).per_instance:
                    assert len(sample["labels"][name]) == rows, name
        batch = collate(samples)
        assert set(batch) == {"images", "label_mask", "meta", *names}
        for name in names:
            if label_kind(name).per_instance:
                assert len(batch[name]) == len(batch["boxes"]), name
        moved = batch_to_device(batch, torch.device("meta"))
        assert moved["images"].device.type == "meta" and moved["meta"] == batch["meta"]
        for name in names:
            entry = moved[name]
            assert (
                entry.device.type == "meta"
                and entry.shape == batch[name].shape
                and entry.dtype == batch[name].dtype
            )


@pytest.mark.parametrize("kind", all_kinds())
def test_the_letterboxed_sample_is_the_record_scaled_and_shifted(tmp_path, kind):
    names = with_requirements(kind)
    record = _write_records(tmp_path, names, count=1)[0]  # 72 x 96: letterboxed left and right
    info = DatasetInfo(INFO.class_names, INFO.image_label_names, INFO.num_identities, tuple(names))
    sample = MultiTaskDataset([record], 64, augment=False, info=info)[0]
    ratio, (left, top) = sample["meta"]["ratio"], sample["meta"]["pad"]
    assert (left, top) == (8, 0) and ratio == pytest.approx(64 / 96)
    w, h = round(record.width * ratio), round(record.height * ratio)
    matrix = np.array([[w / record.width, 0, left], [0, h / record.height, top], [0, 0, 1.0]])
    expected = sample_tensors(aug.transform_labels(record.labels, matrix), (64, 64))
    for name in names:
        torch.testing.assert_close(sample["labels"][name], expected[name], equal_nan=True, msg=name)


def test_kind_names_that_the_batch_uses_are_refused():
    class Bad(LabelKind):
        name = "meta"

    with pytest.raises(ValueError, match="reserved"):
        LABEL_KINDS.add("meta", Bad)
    assert "images" in RESERVED_NAMES
    with pytest.raises(RegistryError, match="Registered label kinds: boxes"):
        label_kind("colour")
