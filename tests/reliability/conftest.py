"""Fixtures for the reliability tests: a very small synthetic world and the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_MODEL


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """8 images and 4 video frames for training (3 batches of 4), 2 images and 4 frames for validation."""
    from unified.data.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("small-world")
    return make_synthetic(
        out, images=8, val_images=2, sequences=1, val_sequences=1, frames=4, size=64, seed=5
    )


@pytest.fixture(scope="session")
def model_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_MODEL))
    return path
