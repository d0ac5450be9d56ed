"""The cost of tracking a detection file follows its rows, not its largest frame number: one row at frame
100,000,000 takes a handful of tracker steps, not a hundred million. Skipping the empty frames is exact: the
tracks are those of stepping every frame. A frame number beyond 2**31 - 1 is a clear error (exit 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.tools.helpers import load_tool
from unified.tracking import Tracker, TrackerConfig
from unified.tracking.mot_io import FrameDetections, read_mot_detections, track_frames

#: Far more tracker steps than any test here needs; the old code would take 10**8 (hours).
STEP_LIMIT = 1000


@pytest.fixture
def steps(monkeypatch) -> list[int]:
    """Counts ``Tracker.update`` calls and stops a run that steps far more frames than it has rows."""
    calls: list[int] = []
    real = Tracker.update

    def counted(self, *args, **kwargs):
        calls.append(self.frame_id + 1)
        if len(calls) > STEP_LIMIT:
            raise AssertionError(
                f"the tracker stepped more than {STEP_LIMIT} frames (now frame {calls[-1]:,})"
            )
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Tracker, "update", counted)
    return calls


def rows(frames: list[int], x0: float = 10.0) -> str:
    """One detection per frame, moving 1 px per frame: ``frame,-1,x,y,w,h,conf``."""
    return "".join(f"{f},-1,{x0 + i:.1f},10,20,40,0.9\n" for i, f in enumerate(frames))


def detections_of(text: str, folder: Path) -> list[FrameDetections]:
    path = folder / "det.txt"
    path.write_text(text)
    return read_mot_detections(path)


def test_detections_from_frame_one_hundred_million_take_two_steps(tmp_path, capsys, steps):
    det = tmp_path / "det.txt"
    det.write_text(rows([100_000_000, 100_000_001]))
    out = tmp_path / "result.txt"
    assert load_tool("track").main(["--detections", str(det), "--out", str(out)]) == 0
    assert len(steps) == 2, steps[:5]
    # The second sighting confirms the track, which is written at its real frame number.
    assert out.read_text().splitlines()[0].startswith("100000001,1,")
    assert "100000001 frames, 1 tracks, 1 rows" in capsys.readouterr().out


def test_empty_stretches_cost_at_most_lost_buffer_plus_one_steps(tmp_path, steps):
    frames = [1, 2, 3, 50_000_000, 50_000_001, 90_000_000]
    config = TrackerConfig(lost_buffer=5)
    detections = detections_of(rows(frames), tmp_path)
    results = list(track_frames(detections, config))
    # Per gap: the frames while the lost track is kept (lost_buffer + 1), then the jump.
    assert len(steps) == len(frames) + 2 * (config.lost_buffer + 1)
    assert [f for f, tracks in results if tracks] == [1, 2, 3, 50_000_001]


def test_skipping_empty_frames_gives_the_tracks_of_stepping_every_frame(tmp_path):
    """Two objects with gaps shorter and longer than lost_buffer, against a tracker fed every frame."""
    rng = np.random.default_rng(0)
    frames = [*range(1, 9), *range(12, 20), *range(40, 48), *range(200, 204)]
    text = "".join(
        f"{f},-1,{10 + 2 * f % 300 + rng.normal():.2f},10,20,40,0.9\n"
        f"{f},-1,{200 + (f % 300) + rng.normal():.2f},80,25,50,{0.5 + 0.4 * rng.random():.3f}\n"
        for f in frames
    )
    config = TrackerConfig(lost_buffer=6)
    detections = detections_of(text, tmp_path)
    skipped = {
        f: [(t.track_id, tuple(t.box)) for t in tracks] for f, tracks in track_frames(detections, config)
    }
    reference = Tracker(config)
    by_frame = {d.frame: d for d in detections}
    for frame in range(1, frames[-1] + 1):
        d = by_frame.get(frame)
        tracks = (
            reference.update(d.boxes, d.scores, None)
            if d
            else reference.update(np.zeros((0, 4)), np.zeros(0))
        )
        expected = [(t.track_id, tuple(t.box)) for t in tracks]
        assert skipped.get(frame, []) == expected, frame
    assert any(skipped[f] for f in range(200, 204))


def test_rows_in_any_order_are_grouped_by_frame(tmp_path):
    text = rows([5, 1, 5, 3], x0=0) + "1,-1,99,10,20,40,0.8\n"
    detections = detections_of(text, tmp_path)
    assert [d.frame for d in detections] == [1, 3, 5]
    assert [len(d.scores) for d in detections] == [2, 1, 2]
    assert detections[0].boxes[:, 0].tolist() == [1.0, 99.0]  # file order kept inside a frame


def test_a_frame_beyond_the_limit_is_exit_2(tmp_path, capsys, steps):
    det = tmp_path / "det.txt"
    det.write_text(rows([1, 2**31]))
    assert load_tool("track").main(["--detections", str(det), "--out", str(tmp_path / "o.txt")]) == 2
    err = capsys.readouterr().err
    assert "det.txt, line 2: frame must be a whole number from 1 to 2,147,483,647, got 2147483648" in err
    assert not steps
