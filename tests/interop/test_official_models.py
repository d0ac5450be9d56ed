"""Every official model definition translates into a model with the official parameter count."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from unified.interop import InteropError, translate_darknet, translate_paper_yaml
from unified.model import build_model
from unified.models import count_params

REFERENCE = Path("/work/shared/reference")
CFG = REFERENCE / "yolor-official" / "cfg"
YAMLS = REFERENCE / "yolor-official" / "models"
ZOO = Path(__file__).resolve().parents[2] / "configs" / "models"

#: Our zoo YAML of the same network, where the zoo has one.
ZOO_OF = {
    "cfg/yolor_csp.cfg": "yolor-csp",
    "cfg/yolor_csp_x.cfg": "yolor-csp-x",
    "cfg/yolov4_csp.cfg": "yolov4-csp",
    "cfg/yolor_p6.cfg": "yolor-p6",
    "cfg/yolor_w6.cfg": "yolor-w6",
    "models/yolor-p6.yaml": "yolor-p6-paper",
    "models/yolor-w6.yaml": "yolor-w6-paper",
    "models/yolor-e6.yaml": "yolor-e6",
    "models/yolor-d6.yaml": "yolor-d6",
}

pytestmark = pytest.mark.skipif(not CFG.is_dir(), reason="official model definitions not available")


def official_numbers() -> dict[str, int]:
    """``source/path`` -> parameters, from the table in numbers.md."""
    table: dict[str, int] = {}
    for line in (REFERENCE / "numbers.md").read_text().splitlines():
        match = re.match(r"\|\s*(main|paper)\s*\|\s*(\S+)\s*\|\s*\d+\s*\|\s*([\d,]+)\s*\|", line)
        if match:
            table[match.group(2)] = int(match.group(3).replace(",", ""))
    return table


def _meta_params(config: dict, implicit_share: dict | None = None) -> int:
    with torch.device("meta"):  # shapes only, so the big models cost nothing
        return count_params(build_model({**config, "nc": 80}, implicit_share=implicit_share))


def _zoo_params(name: str) -> int:
    with torch.device("meta"):
        return count_params(build_model(ZOO / f"{name}.yaml", nc=80))


def test_numbers_table_is_read() -> None:
    numbers = official_numbers()
    assert numbers["cfg/yolor_csp.cfg"] == 52_923_994 and numbers["models/yolor-d6.yaml"] == 151_782_680


@pytest.mark.parametrize("cfg", sorted(p.name for p in CFG.glob("*.cfg")) if CFG.is_dir() else [])
def test_every_official_cfg_translates_with_the_official_parameter_count(cfg: str) -> None:
    translation = translate_darknet(CFG / cfg)
    config = translation.model_config
    sections = translation.sections
    assert len(config["outputs"]) == sum(s.type == "yolo" for s in sections)
    assert config["head"]["implicit"] == any(s.type == "implicit_add" for s in sections)
    params = _meta_params(config, translation.implicit_share)
    key = f"cfg/{cfg}"
    if key in official_numbers():
        assert params == official_numbers()[key]
    if key in ZOO_OF:
        assert params == _zoo_params(ZOO_OF[key])
    # Every official tensor has a place: BN convs carry 6 (weight + BN), linear convs 2, implicit sections 1.
    expected_keys = sum(
        (6 if s.options.get("batch_normalize") == "1" else 2) if s.type == "convolutional" else 0
        for s in sections
    ) + sum(s.type in ("implicit_add", "implicit_mul") for s in sections)
    assert len(translation.key_map) == expected_keys


@pytest.mark.parametrize("name", sorted(p.name for p in YAMLS.glob("*.yaml")) if YAMLS.is_dir() else [])
def test_every_official_paper_yaml_translates_or_names_what_is_missing(name: str) -> None:
    data = yaml.safe_load((YAMLS / name).read_text())
    if any(row[2] == "DWT" for row in data["backbone"] + data["head"]):
        with pytest.raises(InteropError, match=r"row \d+ .*module 'DWT' has no counterpart"):
            translate_paper_yaml(data)
        return
    params = _meta_params(translate_paper_yaml(data))
    key = f"models/{name}"
    if key in official_numbers():
        assert params == official_numbers()[key]
    if key in ZOO_OF:
        assert params == _zoo_params(ZOO_OF[key])


def test_paper_rows_translate_to_our_blocks_and_args() -> None:
    official = {
        "nc": 2,
        "depth_multiple": 1.0,
        "width_multiple": 1.0,
        "anchors": 3,  # a count: the official auto-anchor computes them at training time
        "backbone": [
            [-1, 1, "Conv", [12, 3, 2]],  # 12 is rounded up to 16, as the official parser does at width 1
            [-1, 1, "DownC", [32, 2]],
            [-1, 2, "BottleneckCSPF", [32]],
        ],
        "head": [
            [-1, 1, "SPPCSP", [16, False, 1, 0.25, [3, 5]]],
            [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
            [[-1, 0], 1, "Concat", [1]],
            [-1, 3, "BottleneckCSP2", [16, False]],
            [[5], 1, "IDetect", ["nc", "anchors"]],
        ],
    }
    with pytest.raises(InteropError, match="anchors are a count"):
        translate_paper_yaml(official)
    config = translate_paper_yaml(official, anchors_px=[[10, 13, 16, 30, 33, 23]])
    rows = config["backbone"] + config["neck"]
    assert rows[0] == [-1, 1, "Conv", [16, 3, 2]]
    assert rows[1] == [-1, 1, "DownC", [32, 2]]
    assert rows[2] == [-1, 2, "BottleneckCSPF", [32]]
    assert rows[3] == [-1, 1, "SPPCSP", [16, 0.25, [3, 5]]]
    assert rows[4] == [-1, 1, "Upsample", [2, "nearest"]]
    assert rows[6] == [-1, 3, "BottleneckCSP2", [16, False]]
    assert config["outputs"] == [5] and config["head"] == {"implicit": True} and config["nc"] == 2
    model = build_model(config)
    assert [s.stride for s in model.body.out_shapes] == [2]
    padded = {
        **official,
        "backbone": [[-1, 1, "Conv", [16, 3, 2, 0]]],
        "head": [[[0], 1, "Detect", ["nc", 3]]],
    }
    with pytest.raises(InteropError, match=r"row 0 .*explicit padding 0"):
        translate_paper_yaml(padded, anchors_px=[[1, 1, 2, 2, 3, 3]])
