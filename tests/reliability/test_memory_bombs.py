"""Memory bombs in small files: a deflated checkpoint record that inflates out of proportion to the file, and
a stride-0 tensor of a few bytes that declares megabytes, are refused by name before anything is allocated at
their declared size (``load_safe``, every entry point's reader, and the official-checkpoint reader)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from unified.checkpoint import FORMAT, VERSION, CheckpointError, load_safe, save_atomic
from unified.interop import OfficialCheckpointError, convert_official, read_official_checkpoint

#: 16 MiB of float32 zeros: deflates about 1000-fold, like the 1 MB -> 1 GiB file of the report.
BOMB_ELEMENTS = 1 << 22


def deflate(source: Path, target: Path, extra: tuple[str, bytes] | None = None) -> Path:
    """``source`` re-packed with every record deflated (torch's reader inflates them), plus an ``extra``
    record if given."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
        if extra is not None:
            dst.writestr(extra[0], extra[1], compress_type=zipfile.ZIP_DEFLATED)
    return target


def ours(model: dict[str, torch.Tensor]) -> dict:
    return {"format": FORMAT, "version": VERSION, "model": model, "ema": None}


@pytest.fixture
def torch_loads(monkeypatch) -> list:
    """The ``map_location`` of every ``torch.load``: a refused file must never be loaded for real."""
    seen: list = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("map_location"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return seen


def test_a_deflated_record_is_refused_before_it_is_inflated(tmp_path, torch_loads):
    plain = save_atomic(ours({"body.w": torch.zeros(BOMB_ELEMENTS)}), tmp_path / "plain.pt")
    bomb = deflate(plain, tmp_path / "bomb.pt")
    size = bomb.stat().st_size
    assert size * 200 < BOMB_ELEMENTS * 4, size  # the premise: a small file declaring a large tensor
    with pytest.raises(CheckpointError) as info:
        load_safe(bomb)
    message = str(info.value)
    assert "bomb.pt" in message and "tensor model.body.w" in message and "decompression bomb" in message
    assert "\n" not in message
    assert all(location == "meta" for location in torch_loads), torch_loads  # nothing was inflated
    import unified

    with pytest.raises(CheckpointError, match="decompression bomb"):
        unified.load(bomb)


def test_a_deflated_record_no_tensor_reads_is_refused_by_its_name(tmp_path):
    plain = save_atomic(ours({"w": torch.ones(4)}), tmp_path / "plain.pt")
    prefix = zipfile.ZipFile(plain).namelist()[0].split("/")[0]
    bomb = deflate(plain, tmp_path / "extra.pt", extra=(f"{prefix}/padding", bytes(16 << 20)))
    with pytest.raises(CheckpointError, match=rf"record '{prefix}/padding', 16,777,216 bytes packed into"):
        load_safe(bomb)


def test_an_honestly_deflated_checkpoint_still_loads(tmp_path):
    """Weights barely compress: a re-packed checkpoint stays well inside the allowed expansion."""
    weights = {"w": torch.randn(1 << 18), "b": torch.arange(1000)}
    packed = deflate(save_atomic(ours(weights), tmp_path / "plain.pt"), tmp_path / "packed.pt")
    loaded = load_safe(packed)
    assert all(torch.equal(loaded["model"][k], v) for k, v in weights.items())


def test_load_safe_refuses_a_view_larger_than_its_storage(tmp_path):
    """1 KB of storage seen through stride 0 as 64 MiB: any later copy (``.float()``, an optimiser's
    ``.to(dtype)``) would allocate all of it."""
    view = torch.zeros(256).expand(1 << 16, 256)
    path = tmp_path / "strided.pt"
    torch.save(ours({"heads.detect.w": view}), path)
    assert path.stat().st_size < 8192
    with pytest.raises(CheckpointError) as info:
        load_safe(path)
    message = str(info.value)
    assert "tensor model.heads.detect.w" in message and "view larger than its storage" in message
    assert "(65536, 256)" in message and "\n" not in message


def test_the_official_reader_never_materialises_a_view_larger_than_its_storage(tmp_path):
    path = tmp_path / "official.pt"
    torch.save({"model": {"module_list.0.Conv2d.weight": torch.zeros(256).expand(1 << 14, 256)}}, path)
    assert path.stat().st_size < 8192
    with pytest.raises(OfficialCheckpointError) as info:
        read_official_checkpoint(path)
    message = str(info.value)
    assert "official.pt" in message and "view larger than its storage" in message
    assert "(16384, 256)" in message and "data/0" in message
    with pytest.raises(OfficialCheckpointError, match="view larger than its storage"):
        convert_official(path)


def test_the_official_reader_refuses_a_deflated_record(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"model": {"module_list.0.Conv2d.weight": torch.zeros(BOMB_ELEMENTS)}}, plain)
    bomb = deflate(plain, tmp_path / "official-bomb.pt")
    with pytest.raises(OfficialCheckpointError, match=r"official-bomb\.pt.*decompression bomb"):
        read_official_checkpoint(bomb)
