"""Model-mode tracking: detections (and jde embeddings) of every frame feed the tracker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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


def test_track_save_video_draws_identities_and_trails(tmp_path: Path, capsys) -> None:
    import av

    from unified.commands import track as track_command

    sequence = _sequence(tmp_path / "SEQ-03", frames=5)
    (sequence / "seqinfo.ini").write_text("[Sequence]\nname=SEQ-03\nframeRate=10\nseqLength=5\n")
    weights = save_tiny_checkpoint(tmp_path / "w.pt", tasks=("detect", "jde"))
    out, video = tmp_path / "res.txt", tmp_path / "tracks.mp4"
    argv = ["--weights", str(weights), "--source", str(sequence), "--out", str(out), "--img", "64"]
    assert track_command.main([*argv, "--save-video", str(video), "high_thresh=0.5", "new_track_thresh=0.5"]) == 0
    assert f"-> {out} and {video}" in capsys.readouterr().out
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert len(frames) == 5 and float(stream.average_rate) == 10  # the seqinfo.ini frame rate
        assert (frames[0].width, frames[0].height) == (128, 96)
    with pytest.raises(SystemExit):  # detection mode has no images to draw
        track_command.parse_args(["--detections", str(out), "--out", str(out), "--save-video", str(video)])


def test_track_drawer_draws_a_trail_through_past_centres() -> None:
    from unified.drawing import color
    from unified.inference import TrackDrawer
    from unified.tracking.tracker import TrackedObject

    drawer = TrackDrawer(trail=3)
    black = np.zeros((100, 200, 3), dtype=np.uint8)
    for step in range(5):  # a box moving right by 20 px a frame
        x = 20 + 20 * step
        track = TrackedObject(track_id=4, box=np.array([x, 40, x + 20, 60.0]), score=0.9, cls=0, detection_index=0)
        drawn = np.asarray(drawer.draw(black, [track]))
    rgb = np.array(color(4))
    on_trail = [np.abs(drawn[50, x].astype(int) - rgb).sum() < 30 for x in range(70, 111, 10)]
    assert all(on_trail), "the last three centres (x = 70, 90, 110) are joined by the id's colour"
    assert np.abs(drawn[50, 40].astype(int) - rgb).sum() > 100, "centres older than the trail are gone"
