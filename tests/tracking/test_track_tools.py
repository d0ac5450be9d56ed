"""tools/track.py --detections and tools/evaluate.py --mot-gt end to end on tiny files."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.tracking.mot_synthetic import load_gt, make_detections
from unified.tracking.mot_io import read_mot_detections, track_frames

REPO = Path(__file__).resolve().parents[2]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_detections(path: Path, frames, with_embeddings: bool = False) -> Path:
    lines = []
    for frame in sorted(frames):
        f = frames[frame]
        for i, (x1, y1, x2, y2) in enumerate(f.boxes):
            row = [frame, -1, x1, y1, x2 - x1, y2 - y1, f.scores[i], -1, -1, -1]
            if with_embeddings:
                row += list(f.embeddings[i])
            lines.append(",".join(f"{v:.6g}" for v in row))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def campus(tmp_path):
    """TUD-Campus ground truth in MOTChallenge layout and jittered detections of it."""
    gt = load_gt("TUD-Campus")
    (tmp_path / "gt" / "TUD-Campus" / "gt").mkdir(parents=True)
    np.savetxt(tmp_path / "gt" / "TUD-Campus" / "gt" / "gt.txt", gt, delimiter=",", fmt="%.6g")
    return tmp_path, make_detections(gt, seed=0, dim=8)


def run_tool(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )


def test_track_then_evaluate_as_subprocesses(campus):
    root, frames = campus
    det = write_detections(root / "det.txt", frames)
    out = root / "results" / "TUD-Campus.txt"
    done = run_tool("tools/track.py", "--detections", str(det), "--out", str(out), "lost_buffer=30")
    assert done.returncode == 0, done.stderr
    rows = np.loadtxt(out, delimiter=",")
    assert rows.shape[1] == 10 and (rows[:, 1] >= 1).all() and (rows[:, 7:] == -1).all()
    done = run_tool(
        "tools/evaluate.py", "--mot-gt", str(root / "gt"), "--mot-results", str(root / "results"),
        "--json", str(root / "metrics.json"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["sequence", "TUD-Campus", "OVERALL"]
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["TUD-Campus"]["mota"] > 0.8 and metrics["TUD-Campus"]["idf1"] > 0.75
    assert metrics["OVERALL"]["num_frames"] == 71


def test_track_in_process_uses_embedding_columns(campus, capsys):
    root, frames = campus
    det = write_detections(root / "det_emb.txt", frames, with_embeddings=True)
    parsed = read_mot_detections(det)
    assert parsed[0].embeddings is not None and parsed[0].embeddings.shape[1] == 8
    track = load_tool("track")
    assert track.main(["--detections", str(det), "--out", str(root / "results" / "TUD-Campus.txt")]) == 0
    assert "71 frames" in capsys.readouterr().out
    evaluate = load_tool("evaluate")
    assert evaluate.main(["--mot-gt", str(root / "gt"), "--mot-results", str(root / "results")]) == 0
    overall = capsys.readouterr().out.splitlines()[-1].split()
    assert overall[0] == "OVERALL" and float(overall[3]) > 0.8  # IDF1, a fraction as in every table


def test_frames_without_detections_are_filled_in(tmp_path):
    det = tmp_path / "det.txt"
    det.write_text("1,-1,10,10,20,40,0.9\n2,-1,11,10,20,40,0.9\n5,-1,14,10,20,40,0.9\n")
    results = list(track_frames(read_mot_detections(det)))
    assert [frame for frame, _ in results] == [1, 2, 3, 4, 5]
    assert [[t.track_id for t in tracks] for _, tracks in results] == [[1], [1], [], [], [1]]


def test_tool_errors(tmp_path, capsys):
    track, evaluate = load_tool("track"), load_tool("evaluate")
    bad = tmp_path / "bad.txt"
    bad.write_text("1,-1,10,10,20,40,0.9\n2,-1,10,ten,20,40,0.9\n")
    assert track.main(["--detections", str(bad), "--out", str(tmp_path / "o.txt")]) == 2
    assert "bad.txt, line 2: not a number" in capsys.readouterr().err
    assert track.main(["--detections", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o.txt")]) == 2
    assert "detection file not found" in capsys.readouterr().err
    assert track.main(["--detections", str(bad), "--out", str(tmp_path / "o.txt"), "lost_bufer=3"]) == 2
    assert "Did you mean 'lost_buffer'" in capsys.readouterr().err
    assert (
        track.main(["--weights", str(tmp_path / "w.pt"), "--source", "seq", "--out", str(tmp_path / "o.txt")])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        track.main(
            ["--weights", str(tmp_path / "w.pt"), "--out", str(tmp_path / "o.txt")]
        )  # --source missing
    with pytest.raises(SystemExit):
        track.main(["--detections", str(bad), "--weights", "w.pt", "--out", "o.txt"])
    (tmp_path / "gt" / "S1" / "gt").mkdir(parents=True)
    (tmp_path / "gt" / "S1" / "gt" / "gt.txt").write_text("1,1,10,10,20,40,1,1,1\n")
    assert evaluate.main(["--mot-gt", str(tmp_path / "gt"), "--mot-results", str(tmp_path)]) == 2
    assert "sequence 'S1': result file missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--weights", "w.pt"])  # --data missing
    assert evaluate.main(["--weights", str(tmp_path / "w.pt"), "--data", str(tmp_path / "d.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--mot-gt", str(tmp_path / "gt")])  # --mot-results missing
