"""MultiTaskDataset, collate and the DataLoader helpers against the batch contract of ARCHITECTURE.md."""

from __future__ import annotations

import os
import signal
import threading

import pytest
import torch
from torch.utils.data import SequentialSampler

from unified.data import AugmentConfig, MultiTaskDataset, build_dataloader, collate, load_dataset_yaml
from unified.data.dataset import iterate_loader, seed_worker
from unified.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    return make_synthetic(
        out, images=8, val_images=3, sequences=1, val_sequences=1, frames=4, size=64, seed=11
    )


def check_batch(batch: dict, size: int, num_labels: int, count: int) -> None:
    kinds = {"boxes", "identities", "image_labels"}
    assert set(batch) == {"images", "label_mask", "meta"} | kinds
    images, targets = batch["images"], batch["boxes"]
    assert images.shape == (count, 3, size, size) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert targets.dtype == torch.float32 and targets.ndim == 2 and targets.shape[1] == 6
    assert set(targets[:, 0].long().tolist()) <= set(range(count))
    assert (targets[:, 0].diff() >= 0).all()  # rows grouped by image
    assert ((targets[:, 2:6] >= 0) & (targets[:, 2:6] <= 1)).all() and (targets[:, 4:6] > 0).all()
    ids = batch["identities"]
    assert ids.dtype == torch.long and ids.shape == (len(targets),) and (ids >= -1).all()
    assert batch["image_labels"].shape == (count, num_labels) and batch["image_labels"].dtype == torch.float32
    assert set(batch["label_mask"]) == kinds
    for mask in batch["label_mask"].values():
        assert mask.dtype == torch.bool and mask.shape == (count,)
    assert len(batch["meta"]) == count
    for meta in batch["meta"]:
        assert {"image_id", "path", "orig_shape", "ratio", "pad"} <= set(meta)


def test_validation_batches_follow_the_contract(world):
    records, info = load_dataset_yaml(world, "val")
    dataset = MultiTaskDataset(records, 64, augment=False, info=info)
    batch = collate([dataset[i] for i in range(len(dataset))])
    check_batch(batch, 64, len(info.image_label_names), len(records))
    masks = batch["label_mask"]
    stills = [r.part == "shapes" for r in records]
    assert masks["image_labels"].tolist() == stills and masks["identities"].tolist() == [
        not s for s in stills
    ]
    assert masks["boxes"].all()
    # the targets are the records' boxes, normalised (64 px images: no letterbox)
    first = records[0]
    rows = batch["boxes"][batch["boxes"][:, 0] == 0]
    assert rows[:, 1].long().tolist() == first.labels["boxes"].classes.tolist()
    torch.testing.assert_close(
        rows[:, 2] * 64,
        torch.from_numpy((first.labels["boxes"].xyxy[:, 0] + first.labels["boxes"].xyxy[:, 2]) / 2),
    )
    # image labels: the record's, multi-hot; frames have none
    assert torch.nonzero(batch["image_labels"][0]).flatten().tolist() == first.labels["image_labels"].tolist()
    video = batch["meta"][-1]
    assert video["sequence"] == "synth-val-01" and video["frame"] == 4
    assert (batch["identities"][batch["boxes"][:, 0] == len(records) - 1] >= 0).all()


def test_training_batches_follow_the_contract(world):
    records, info = load_dataset_yaml(world, "train")
    hyp = {
        "mosaic": 1.0,
        "mixup": 0.5,
        "degrees": 5.0,
        "lr0": 0.01,
    }  # an official hyp file mixes in other keys
    dataset = MultiTaskDataset(records, 64, augment=True, hyp=hyp, info=info, cache_images=True)
    assert dataset.hyp.mixup == 0.5 and isinstance(dataset.hyp, AugmentConfig)
    torch.manual_seed(0)
    batch = collate([dataset[i] for i in range(len(dataset))])
    check_batch(batch, 64, len(info.image_label_names), len(records))
    frames = batch["label_mask"]["identities"]
    ids = batch["identities"]
    in_frames = frames[batch["boxes"][:, 0].long()]
    assert (ids[in_frames] >= 0).all() and (ids[~in_frames] == -1).all()
    assert batch["image_labels"][frames].sum() == 0


def test_collate_of_images_without_boxes():
    sample = {
        "image": torch.zeros(3, 8, 8, dtype=torch.uint8),
        "labels": {
            "boxes": torch.zeros(0, 5),
            "identities": torch.zeros(0, dtype=torch.long),
            "image_labels": torch.zeros(4),
        },
        "label_mask": {"boxes": True, "image_labels": False, "identities": False},
        "meta": {"image_id": 0, "path": "x", "orig_shape": (8, 8), "ratio": 1.0, "pad": (0, 0)},
    }
    batch = collate([sample, sample])
    assert batch["boxes"].shape == (0, 6) and batch["identities"].shape == (0,)
    assert batch["image_labels"].shape == (2, 4) and batch["images"].shape == (2, 3, 8, 8)
    with pytest.raises(ValueError):
        collate([])


def test_loader_workers_are_seeded(world):
    records, info = load_dataset_yaml(world, "train")
    dataset = MultiTaskDataset(records, 64, augment=True, info=info)

    def first_batch(seed: int) -> dict:
        loader = build_dataloader(dataset, 4, shuffle=True, num_workers=2, seed=seed)
        return next(iter(loader))

    a, b, c = first_batch(3), first_batch(3), first_batch(4)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["boxes"], b["boxes"])
    assert not torch.equal(a["images"], c["images"])


def test_loader_takes_a_sampler_and_needs_a_group_for_distributed(world):
    records, info = load_dataset_yaml(world, "val")
    dataset = MultiTaskDataset(records, 64, augment=False, info=info)
    loader = build_dataloader(dataset, 5, shuffle=True, sampler=SequentialSampler(dataset))
    ids = [m["image_id"] for batch in loader for m in batch["meta"]]
    assert ids == list(range(len(records)))
    with pytest.raises((RuntimeError, ValueError)):
        build_dataloader(dataset, 2, shuffle=True, distributed=True)


class _SignalState(torch.utils.data.Dataset):
    """Reports, from inside a loader worker, how that worker treats Ctrl-C."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict:
        blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set())
        return {"ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN, "blocked": blocked}


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks only")
def test_loader_workers_leave_ctrl_c_to_the_main_process():
    loader = torch.utils.data.DataLoader(
        _SignalState(), batch_size=None, num_workers=1, worker_init_fn=seed_worker
    )
    states = list(iterate_loader(loader))
    # Ignored, and no longer blocked: a Ctrl-C held back while the worker forked was discarded.
    assert states == [{"ignored": True, "blocked": False}] * 2
    # The main process still takes Ctrl-C: its mask is back as it was.
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN


class _InterruptedWhileStarting:
    """A loader that receives Ctrl-C while it starts (as a DataLoader forking its workers might)."""

    def __init__(self) -> None:
        self.started = False

    def __iter__(self):
        # Sent from another thread, which does not block SIGINT: the kernel may hand it to any thread,
        # and Python then runs this process's handler in the main thread at once.
        sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT))
        sender.start()
        sender.join()
        self.started = True  # reached only if the signal was held back
        return iter([1, 2])


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks only")
def test_a_ctrl_c_while_a_loader_starts_is_raised_after_it_started():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        loader = _InterruptedWhileStarting()
        with pytest.raises(KeyboardInterrupt):
            iterate_loader(loader)
        assert loader.started
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
