"""Corrupted checkpoint bytes and broken checkpoint metadata are clear one-line errors.

Every record of a checkpoint archive carries a CRC-32 (``save_atomic`` makes torch write it) that
``load_safe`` verifies, so a flipped byte in the weights, the optimiser state or the pickled structure is a
``CheckpointError`` naming the record instead of changed detections or a quietly resumed run. A checkpoint
with the right format tag but a missing key or a broken ``version`` is a ``CheckpointError`` too, not a
KeyError or TypeError traceback.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest
import torch

from tests.tools.helpers import load_tool, save_tiny_checkpoint, write_images
from unified.checkpoint import FORMAT, VERSION, CheckpointError, load_safe, require_format, save_atomic

FIXTURES = Path("/work/shared/reference/fixtures")


def record_data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a record's bytes start: after its local header (30 bytes, the name, the extra field)."""
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length


def flip_byte(path: Path, record: str | None = None) -> str:
    """Flip one byte in the middle of ``record`` (default: the largest tensor record); returns its name."""
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    if record is None:
        info = max((i for i in infos if "/data/" in i.filename), key=lambda i: i.file_size)
    else:
        info = next(i for i in infos if i.filename.endswith(record))
    data = bytearray(path.read_bytes())
    data[record_data_offset(path, info) + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))
    return info.filename


def test_a_flipped_byte_in_the_weights_is_refused_everywhere(tmp_path, capsys):
    path = save_tiny_checkpoint(tmp_path / "w.pt", tasks=("detect",))
    record = flip_byte(path)
    with pytest.raises(CheckpointError) as info:
        load_safe(path)
    message = str(info.value)
    assert "w.pt" in message and repr(record) in message and "CRC-32" in message and "\n" not in message
    import unified

    with pytest.raises(CheckpointError, match="CRC-32"):
        unified.load(path)
    images = write_images(tmp_path / "images")[0].parent
    argv = ["--weights", str(path), "--source", str(images), "--out", str(tmp_path / "out")]
    assert load_tool("detect").main(argv) == 2
    err = capsys.readouterr().err
    assert "CRC-32" in err and "Traceback" not in err


def test_a_flipped_byte_in_the_optimiser_state_is_refused(tmp_path):
    model = torch.nn.Linear(64, 32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 64)).sum().backward()
    optimizer.step()
    ckpt = {"format": FORMAT, "version": VERSION, "epoch": 3, "optimizer": optimizer.state_dict()}
    path = save_atomic(ckpt, tmp_path / "last.pt")
    assert torch.equal(load_safe(path)["optimizer"]["state"][0]["momentum_buffer"], model.weight.grad)
    record = flip_byte(path)  # the only tensors are the momentum buffers
    with pytest.raises(CheckpointError, match=rf"record {record!r} does not match its CRC-32"):
        load_safe(path)


def test_a_flipped_byte_in_the_pickled_structure_is_refused(tmp_path):
    path = save_atomic({"format": FORMAT, "version": VERSION, "epoch": 12345678}, tmp_path / "s.pt")
    flip_byte(path, record="data.pkl")
    with pytest.raises(CheckpointError, match=r"data\.pkl' does not match its CRC-32"):
        load_safe(path)


def test_checkpoints_not_written_by_save_atomic_still_load_and_are_checked(tmp_path):
    """Files of plain ``torch.save`` carry the same CRC-32s (the official fixtures' outputs are such files);
    one written with torch's CRC-32 switched off has none and loads unverified."""
    expected = load_safe(FIXTURES / "darknet_small" / "expected.pt")
    assert expected["decoded"].ndim == 3
    path = tmp_path / "plain.pt"
    torch.save({"w": torch.arange(100.0)}, path)
    assert torch.equal(load_safe(path)["w"], torch.arange(100.0))
    flip_byte(path)
    with pytest.raises(CheckpointError, match="CRC-32"):
        load_safe(path)
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"w": torch.arange(100.0)}, tmp_path / "no-crc.pt")
        save_atomic({"w": torch.arange(100.0)}, tmp_path / "ours.pt")
        assert torch.serialization.get_crc32_options() is False  # save_atomic put the option back
    finally:
        torch.serialization.set_crc32_options(before)
    assert torch.equal(load_safe(tmp_path / "no-crc.pt")["w"], torch.arange(100.0))
    with zipfile.ZipFile(tmp_path / "ours.pt") as archive:
        assert all(info.CRC != 0 for info in archive.infolist() if info.file_size)


def _mutations() -> dict[str, tuple]:
    """name -> (change to a valid checkpoint dict, text the error must contain)."""
    return {
        "version 'x'": (lambda c: c.update(version="x"), "without a valid 'version' (got 'x'"),
        "no version": (lambda c: c.pop("version"), "without a valid 'version' (got None"),
        "version True": (lambda c: c.update(version=True), "without a valid 'version'"),
        "no model_config": (lambda c: c.pop("model_config"), "without 'model_config'"),
        "no dataset_info": (lambda c: c.pop("dataset_info"), "without 'dataset_info'"),
        "no model": (lambda c: c.pop("model"), "without 'model'"),
        "tasks a string": (lambda c: c.update(tasks="detect"), "'tasks' is a str, not a list"),
        "dataset_info a list": (lambda c: c.update(dataset_info=[1]), "'dataset_info' is a list, not a dict"),
        "class_names missing": (
            lambda c: c["dataset_info"].pop("class_names"),
            "(dataset_info): required key(s) missing: class_names",
        ),
        "model_config of another type": (
            lambda c: c["model_config"].update(nc="three"),
            "the model it describes cannot be built",
        ),
        "ema without model": (lambda c: c.update(ema={"updates": 3}), "'ema' holds no 'model' state_dict"),
        "a weight missing": (
            lambda c: c["model"].pop(next(iter(c["model"]))),
            "do not fit the model it describes: 1 missing",
        ),
        "a weight of another shape": (
            lambda c: c["model"].update({k: v[:1] for k, v in c["model"].items() if v.ndim and len(v) > 1}),
            "of another shape (first ",
        ),
        "plugins a string": (lambda c: c.update(plugins="mypkg"), "'plugins' is a str, not a list"),
    }


@pytest.mark.parametrize("mutation", list(_mutations()))
def test_broken_metadata_is_a_one_line_checkpoint_error(tmp_path, mutation):
    change, expected = _mutations()[mutation]
    path = save_tiny_checkpoint(tmp_path / "meta.pt", tasks=("detect",))
    ckpt = load_safe(path)
    change(ckpt)
    save_atomic(ckpt, path)
    import unified

    with pytest.raises(CheckpointError) as info:
        unified.load(path)
    message = str(info.value)
    assert expected in message and "meta.pt" in message, message
    assert "\n" not in message


def test_require_format_names_what_is_missing(tmp_path):
    path = tmp_path / "c.pt"
    require_format({"format": FORMAT, "version": VERSION, "experiment": {}}, path, keys=("experiment",))
    with pytest.raises(CheckpointError, match=r"c\.pt is a unified checkpoint without 'experiment'"):
        require_format({"format": FORMAT, "version": VERSION, "model": {}}, path, keys=("experiment",))
    with pytest.raises(CheckpointError, match=r"without a valid 'version' \(got '1'"):
        require_format({"format": FORMAT, "version": "1"}, path)
    with pytest.raises(CheckpointError, match="newer version"):
        require_format({"format": FORMAT, "version": VERSION + 1}, path)
