"""Model-mode tracking: detections (and jde embeddings) of every frame feed the tracker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import unified
from tests.tools.helpers import save_tiny_checkpoint
from unified.inference import sequence_frames, track_source
from unified.tracking import TrackerConfig


def _sequence(folder: Path, frames: int = 4) -> Path:
    (folder / "img1").mkdir(parents=True)
    still = np.random.default_rng(3).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    for number in range(1, frames + 1):
        Image.fromarray(still).save(folder / "img1" / f"{number:06d}.jpg", quality=95)
    return folder


def test_a_still_scene_keeps_its_track_ids(tmp_path: Path) -> None:
    sequence = _sequence(tmp_path / "SEQ-01")
    assert [f.frame for f in sequence_frames(sequence)] == [1, 2, 3, 4]
    for tasks in (("detect",), ("detect", "jde")):
        model = unified.load(save_tiny_checkpoint(tmp_path / f"{len(tasks)}.pt", tasks=tasks)).fuse()
        config = TrackerConfig(high_thresh=0.5, new_track_thresh=0.5)
        results = list(track_source(model, sequence, config, img_size=64))
        assert [frame for frame, _ in results] == [1, 2, 3, 4]
        ids = [sorted(t.track_id for t in tracks) for _, tracks in results]
        assert ids[1], "tracks are confirmed by the second sighting"
        assert ids[1] == ids[2] == ids[3]  # identical frames: the same objects, the same ids
        assert model.tasks["detect"].cfg.conf_thres == config.low_thresh


def test_track_tool_model_function_writes_mot_rows(tmp_path: Path, capsys) -> None:
    import argparse

    from tests.tools.helpers import load_tool

    track = load_tool("track")
    sequence = _sequence(tmp_path / "SEQ-02", frames=3)
    weights = save_tiny_checkpoint(tmp_path / "w.pt", tasks=("detect", "jde"))
    out = tmp_path / "res" / "SEQ-02.txt"
    args = argparse.Namespace(weights=weights, source=str(sequence), out=out, img=64, plugins=[])
    config = TrackerConfig(high_thresh=0.5, new_track_thresh=0.5)
    assert track.track_with_model(args, config) == 0
    rows = [line.split(",") for line in out.read_text().splitlines()]
    assert rows and {int(r[0]) for r in rows} == {1, 2, 3} and all(len(r) == 10 for r in rows)
    args.source = str(tmp_path / "missing")
    assert track.track_with_model(args, config) == 2
    assert "does not exist" in capsys.readouterr().err
