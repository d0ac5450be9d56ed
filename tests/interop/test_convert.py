"""Official checkpoints: both fixtures reproduce the official outputs, safe reading, clear errors, fusion."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

import unified
from unified.checkpoint import CheckpointError, load_safe
from unified.engine.launch import load_pretrained
from unified.implicit import ImplicitOp
from unified.interop import (
    InteropError,
    UnsafeCheckpointError,
    build_converted,
    convert_official,
    read_official_checkpoint,
    save_converted,
    translate_darknet,
)
from unified.interop.darknet import convert_darknet
from unified.model import build_model
from unified.models.blocks import Conv

FIXTURES = Path("/work/shared/reference/fixtures")
CASES = {"darknet_small": "model.cfg", "paper_small": None}

REPO = Path(__file__).resolve().parents[2]

needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="official fixtures not available")


def _tool(name: str):
    """A module of tools/ (a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _convert(name: str):
    folder = FIXTURES / name
    cfg = folder / CASES[name] if CASES[name] else None
    return convert_official(folder / "ckpt.pt", cfg)


def _outputs(model, name: str) -> tuple[dict, dict]:
    folder = FIXTURES / name
    images = torch.load(folder / "input.pt", weights_only=True)
    expected = torch.load(folder / "expected.pt", weights_only=True)
    with torch.no_grad():
        return model(images)["detect"], expected


def _raw_error(out: dict, expected: dict) -> float:
    assert [tuple(r.shape) for r in out["raw"]] == [tuple(r.shape) for r in expected["raw"]]
    return max((a - b).abs().max().item() for a, b in zip(out["raw"], expected["raw"]))


@needs_fixtures
@pytest.mark.parametrize("name", sorted(CASES))
def test_converted_fixture_reproduces_the_official_outputs(name: str) -> None:
    converted = _convert(name)
    model = build_converted(converted)
    out, expected = _outputs(model, name)
    assert _raw_error(out, expected) < 1e-4
    assert out["decoded"].shape == expected["decoded"].shape
    assert (out["decoded"] - expected["decoded"]).abs().max().item() < 1e-2  # pixels
    head = model.heads["detect"]
    assert head.stride_values == [int(s) for s in expected["strides"]]
    assert torch.equal(head.anchors, torch.stack([a.float() for a in expected["anchors_px"]]))
    assert head.nc == expected["nc"]
    assert converted.official_params == sum(p.numel() for p in model.parameters())


@needs_fixtures
def test_paper_conversion_reads_eps_activation_and_names_from_the_pickle() -> None:
    converted = _convert("paper_small")
    assert converted.branch == "paper"
    assert converted.model_config["norm"] == {"eps": 1e-3, "momentum": 0.03}
    assert converted.model_config["activation"] == "silu"
    assert converted.class_names == ["c0", "c1", "c2"]
    assert all(t.dtype == torch.float32 for t in converted.state_dict.values() if t.is_floating_point())
    darknet = _convert("darknet_small")
    assert darknet.model_config["norm"]["eps"] == 1e-4 and darknet.class_names == ["0", "1", "2"]


@needs_fixtures
@pytest.mark.parametrize("name", sorted(CASES))
def test_saved_checkpoint_loads_weights_only_and_matches(tmp_path: Path, name: str) -> None:
    out = save_converted(_convert(name), tmp_path / f"{name}.pt")
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["tasks"] == ["detect"] and ckpt["ema"] is None and ckpt["task_options"] == {}
    assert set(ckpt) >= {"format", "version", "model_config", "implicit_share", "dataset_info", "model"}
    model = unified.load(out)
    assert not model.training
    out_now, expected = _outputs(model, name)
    assert _raw_error(out_now, expected) < 1e-4


@needs_fixtures
@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_converted_model_agrees_and_has_no_implicit_ops_on_the_head(name: str) -> None:
    model = build_converted(_convert(name))
    unfused, expected = _outputs(model, name)
    model.fuse()
    fused, _ = _outputs(model, name)
    assert _raw_error(fused, {"raw": unfused["raw"]}) < 1e-4
    assert _raw_error(fused, expected) < 1e-4
    assert not any(isinstance(m, ImplicitOp) for m in model.heads.modules())
    convs = [m for m in model.modules() if isinstance(m, Conv)]
    assert convs and not any(isinstance(m.bn, torch.nn.BatchNorm2d) for m in convs)


@needs_fixtures
def test_fine_tuning_on_another_class_count_keeps_everything_but_the_class_dependent_head(tmp_path) -> None:
    converted = _convert("paper_small")
    path = save_converted(converted, tmp_path / "paper.pt")
    model = build_model(converted.model_config, nc=5)
    skipped = load_pretrained(model, str(path))
    levels = len(converted.model_config["anchors"])
    expected_skips = {f"heads.detect.m.{lvl}.{p}" for lvl in range(levels) for p in ("weight", "bias")}
    expected_skips |= {f"bank.detect.im.{lvl}.implicit" for lvl in range(levels)}
    assert set(skipped) == expected_skips
    state = model.state_dict()
    kept = [k for k in state if k not in expected_skips]
    assert kept and all(torch.equal(state[k], converted.state_dict[k]) for k in kept)
    assert model.heads["detect"].nc == 5


class RunsCommand:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_a_checkpoint_that_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "model": RunsCommand(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load global (posix|nt|os)\.system"):
        read_official_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        convert_official(path, cfg=None)
    with pytest.raises(CheckpointError, match="not a plain-tensor checkpoint"):
        load_safe(path)
    assert not marker.exists()

    main = _tool("convert_official").main
    assert main(["--weights", str(path), "--out", str(tmp_path / "out.pt")]) == 2
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_stand_ins_record_official_objects_without_running_them(tmp_path: Path) -> None:
    # A pickle that names an official class (Conv.__new__, then its state) is read into an inert stand-in.
    import pickletools

    payload = b"\x80\x02cmodels.common\nConv\nq\x00)\x81q\x01}q\x02(X\x01\x00\x00\x00aK\x01ub."
    assert [op.name for op, _, _ in pickletools.genops(payload)][:4] == [
        "PROTO",
        "GLOBAL",
        "BINPUT",
        "EMPTY_TUPLE",
    ]
    path = tmp_path / "plain.pkl"
    path.write_bytes(payload)
    from unified.interop.unpickler import OfficialObject, RestrictedUnpickler

    with path.open("rb") as handle:
        loaded = RestrictedUnpickler(handle, lambda key: b"", str(path)).load()
    assert isinstance(loaded, OfficialObject)
    assert loaded.official_class == "models.common.Conv" and loaded.state == {"a": 1}


def test_unsupported_darknet_layer_is_named_with_section_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(
        "[net]\nwidth=64\n\n[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\nstride=2\npad=1\n"
        "activation=silu\n\n[dropout]\nprobability=.5\n"
    )
    with pytest.raises(
        InteropError, match=r"bad\.cfg, line 12: section 1 \[dropout\].*'dropout' is not supported"
    ):
        translate_darknet(cfg)


def _tiny_cfg(head: str) -> str:
    conv = "[convolutional]\nbatch_normalize=1\nfilters={f}\nsize=3\nstride={s}\npad=1\nactivation=silu\n\n"
    return (
        "[net]\nwidth=64\n\n"
        + conv.format(f=8, s=2)  # 0
        + conv.format(f=16, s=2)  # 1
        + conv.format(f=16, s=2)  # 2
        + "[implicit_add]\nfilters=16\n\n[implicit_mul]\nfilters=18\n\n"  # 3, 4
        + "[route]\nlayers=2\n\n"  # 5
        + head
        + "[yolo]\nmask=0,1,2\nanchors=10,13, 16,30, 33,23\nclasses=1\nnum=3\n"
    )


HEAD = (
    "[shift_channels]\nfrom=3\n\n[convolutional]\nfilters=18\nsize=1\nstride=1\npad=1\nactivation=linear\n\n"
    "[control_channels]\nfrom=4\n\n"
)


def test_darknet_head_pattern_and_strides(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(_tiny_cfg(HEAD))
    translation = translate_darknet(cfg)
    assert translation.model_config["outputs"] == [3]
    assert translation.model_config["head"] == {"implicit": True}
    assert translation.key_map["module_list.3.implicit"] == "bank.detect.ia.0.implicit"
    assert translation.key_map["module_list.7.Conv2d.bias"] == "heads.detect.m.0.bias"
    model = build_model(translation.model_config)
    assert [s.stride for s in model.body.out_shapes] == [8]


def test_darknet_head_without_control_channels_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "half.cfg"
    cfg.write_text(_tiny_cfg(HEAD.replace("[control_channels]\nfrom=4\n\n", "")))
    with pytest.raises(InteropError, match=r"section \d+ \[yolo\].*same head"):
        translate_darknet(cfg)


def test_missing_or_misshapen_weights_are_named(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(_tiny_cfg(HEAD))
    model = build_model(translate_darknet(cfg).model_config)
    own = model.state_dict()
    official = {
        "module_list.0.Conv2d.weight": own["body.layers.0.conv.weight"],
        "module_list.1.Conv2d.weight": torch.zeros(16, 9, 3, 3),  # wrong input channels
        "module_list.9.Conv2d.weight": torch.zeros(1),  # no such conv
    }
    with pytest.raises(InteropError) as info:
        convert_darknet({"model": official}, cfg)
    message = str(info.value)
    assert (
        "shape mismatch: official 'module_list.1.Conv2d.weight' (darknet section 1 [convolutional]" in message
    )
    assert "'module_list.9.Conv2d.weight'" in message and "no counterpart" in message
    assert (
        "our tensor 'body.layers.0.bn.running_var' (body row 0 = darknet section 0) gets no official"
        in message
    )


@needs_fixtures
def test_main_checkpoint_without_cfg_asks_for_it() -> None:
    with pytest.raises(InteropError, match="pass its darknet cfg with --cfg"):
        convert_official(FIXTURES / "darknet_small" / "ckpt.pt")


@needs_fixtures
def test_convert_tool_writes_checkpoint_and_model_yaml(tmp_path: Path, capsys) -> None:
    main = _tool("convert_official").main
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    folder = FIXTURES / "darknet_small"
    out = tmp_path / "dark.pt"
    args = ["--weights", str(folder / "ckpt.pt"), "--cfg", str(folder / "model.cfg"), "--out", str(out)]
    assert main([*args, "--names", str(names)]) == 0
    assert "345,248" in capsys.readouterr().out
    model = unified.load(out)
    assert model.info.class_names == ["cat", "dog", "bird"]
    rebuilt = build_model(out.with_suffix(".yaml"), nc=3)
    rebuilt.load_state_dict(torch.load(out, weights_only=True)["model"])  # the YAML describes the weights


@needs_fixtures
@pytest.mark.slow
def test_converted_checkpoint_fine_tunes_through_the_cli_on_five_classes(
    tmp_path: Path, tiny_world: Path
) -> None:
    import subprocess
    import sys

    out = tmp_path / "paper.pt"
    convert = _tool("convert_official").main
    assert convert(["--weights", str(FIXTURES / "paper_small" / "ckpt.pt"), "--out", str(out)]) == 0
    result = subprocess.run(
        [
            sys.executable, "tools/train_multitask.py", "--data", str(tiny_world), "--model", str(out.with_suffix(".yaml")),
            "--weights", str(out), "--tasks", "detect", "--epochs", "1", "--batch-size", "4", "--img", "128",
            "--workers", "0", "--device", "cpu", "--project", str(tmp_path / "runs"), "--name", "ft", "--no-progress",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # 5 classes instead of 3: per level the 1×1 output conv (weight, bias) and the implicit multiply.
    assert "re-initialised 12 tensors" in result.stdout
    ckpt = torch.load(tmp_path / "runs" / "ft" / "weights" / "last.pt", weights_only=True)
    assert ckpt["dataset_info"]["class_names"] == ["ellipse", "rectangle", "triangle", "star", "cross"]


def test_a_corrupt_official_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    import zipfile

    from unified.interop import OfficialCheckpointError

    good = tmp_path / "good.pt"
    torch.save({"model": {"module_list.0.Conv2d.weight": torch.zeros(10)}}, good)
    assert torch.equal(
        read_official_checkpoint(good)["model"]["module_list.0.Conv2d.weight"], torch.zeros(10)
    )
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data[:8] if item.filename.endswith("/data/0") else data)  # 2 of 10 floats
    with pytest.raises(OfficialCheckpointError, match=r"bad\.pt cannot be read \(corrupt or truncated\?\)"):
        read_official_checkpoint(bad)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(UnsafeCheckpointError, match="not a torch zip archive"):
        read_official_checkpoint(tmp_path / "text.pt")
