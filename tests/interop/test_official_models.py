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
