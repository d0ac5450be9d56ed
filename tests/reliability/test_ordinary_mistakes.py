"""Ordinary mistakes of the tools (issue 13, item 6): one line naming what was typed, exit code 2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml

from tests.tools.helpers import save_tiny_checkpoint, write_images
from unified.commands import predict, track, train, val


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("mistakes") / "tiny.pt")


@pytest.fixture
def no_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("device", ["cuda", "0"])
def test_cuda_device_without_cuda(device, checkpoint, tmp_path, no_cuda, capsys) -> None:
    image = write_images(tmp_path / "images")[0]
    data = tmp_path / "data.yaml"
    runs = [
        (predict, ["--weights", str(checkpoint), "--source", str(image), "--out", str(tmp_path / "p")]),
        (val, ["--weights", str(checkpoint), "--data", str(data)]),
        (
            track,
            [
                "--weights",
                str(checkpoint),
                "--source",
                str(tmp_path / "images"),
                "--out",
                str(tmp_path / "t"),
            ],
        ),
    ]
    for command, argv in runs:
        assert command.main([*argv, "--device", device]) == 2, command.__name__
        assert f"--device {device} asks for CUDA" in one_error_line(capsys), command.__name__


def test_sync_bn_without_cuda(tmp_path, no_cuda, capsys) -> None:
    argv = ["--model", "yolor-tiny", "--data", str(tmp_path / "none.yaml"), "--sync-bn"]
    assert train.main([*argv, "--project", str(tmp_path / "runs")]) == 2
    assert "--sync-bn" in one_error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_img_not_a_multiple_of_the_stride(checkpoint, tmp_path, capsys) -> None:
    write_images(tmp_path / "images")
    assert (
        val.main(["--weights", str(checkpoint), "--data", str(tmp_path / "data.yaml"), "--img", "100"]) == 2
    )
    assert "--img 100" in one_error_line(capsys)
    out = tmp_path / "t.txt"
    argv = [
        "--weights",
        str(checkpoint),
        "--source",
        str(tmp_path / "images"),
        "--out",
        str(out),
        "--img",
        "100",
    ]
    assert track.main(argv) == 2
    assert "--img 100" in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("av") is None, reason="needs PyAV")
@pytest.mark.parametrize("content", [b"", b"\x00\x01not a video" * 50], ids=["empty", "corrupt"])
def test_empty_or_corrupt_video(content, checkpoint, tmp_path, capsys) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(content)
    assert (
        predict.main(["--weights", str(checkpoint), "--source", str(video), "--out", str(tmp_path / "p")])
        == 2
    )
    assert str(video) in one_error_line(capsys)
    assert (
        track.main(["--weights", str(checkpoint), "--source", str(video), "--out", str(tmp_path / "t")]) == 2
    )
    assert str(video) in one_error_line(capsys)


def test_dataset_yaml_as_config(tmp_path, capsys) -> None:
    data = tmp_path / "coco.yaml"
    data.write_text(
        yaml.safe_dump({"train": "images/train", "val": "images/val", "nc": 2, "names": ["a", "b"]})
    )
    assert train.main(["--config", str(data), "--project", str(tmp_path / "runs")]) == 2
    line = one_error_line(capsys)
    assert str(data) in line and "looks like a dataset YAML" in line and f"--data {data}" in line
