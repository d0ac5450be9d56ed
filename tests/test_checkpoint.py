import errno
import os
import pickle

import pytest
import torch

from unified import checkpoint as ckpt_mod
from unified.checkpoint import CheckpointError, load_safe, require_format, save_atomic


def test_round_trip_with_weights_only(tmp_path):
    path = save_atomic(
        {"format": ckpt_mod.FORMAT, "version": 1, "w": torch.arange(3)}, tmp_path / "w" / "last.pt"
    )
    loaded = load_safe(path)
    assert torch.equal(loaded["w"], torch.arange(3))
    require_format(loaded, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic({"epoch": 1}, path)
    real_save = torch.save

    def disk_full(obj, handle):
        real_save({"epoch": 2, "pad": torch.zeros(1000)}, handle)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*previous last.pt is unchanged"):
        save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_safe(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class RunsCommand:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with path.open("wb") as handle:
        pickle.dump({"model": RunsCommand(str(marker))}, handle)
    with pytest.raises(CheckpointError, match="refused"):
        load_safe(path)
    assert not marker.exists()


def test_truncated_and_foreign_files(tmp_path):
    path = save_atomic({"format": ckpt_mod.FORMAT, "w": torch.zeros(10000)}, tmp_path / "a.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_safe(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_safe(tmp_path / "none.pt")
    save_atomic({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a unified checkpoint"):
        require_format(load_safe(tmp_path / "other.pt"), tmp_path / "other.pt")
