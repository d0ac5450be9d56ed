"""docs/CONFIG.md is the generated reference of every experiment config key and stays in sync with the code."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from unified.config_reference import NOTES, REGENERATE, config_reference, dataclass_keys
from unified.engine.experiment import ExperimentConfig
from unified.task import TASKS

ROOT = Path(__file__).resolve().parents[1]


def test_config_md_is_up_to_date() -> None:
    page = (ROOT / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    assert page == config_reference(), f"docs/CONFIG.md is out of date: regenerate it with `{REGENERATE}`"


def test_every_experiment_key_is_listed_with_its_default() -> None:
    keys = {k.key: k for k in dataclass_keys(ExperimentConfig)}
    defaults = ExperimentConfig()
    for item in dataclasses.fields(ExperimentConfig):
        assert item.name in keys
    assert keys["train.epochs"].default == f"`{defaults.train.epochs}`"
    assert keys["optim.lr0"].default == f"`{defaults.optim.lr0}`"
    assert keys["augment.mosaic"].meaning  # from AugmentConfig's Attributes section
    assert keys["eval.interval"].meaning.startswith("epochs between evaluations")  # from the field's comment
    page = config_reference()
    for name in ("detect", "jdc", "jde", "segment", "pose"):
        assert f"### `{name}`" in page
    assert "`balancer.options.temperature`" in page


def test_notes_name_existing_keys() -> None:
    """A note for a key that was renamed or removed would silently document nothing."""
    known = {k.key for k in dataclass_keys(ExperimentConfig)}
    for name in TASKS.names():
        known |= {k.key for k in dataclass_keys(TASKS.get(name).config_class, f"task_options.{name}.")}
    assert sorted(set(NOTES) - known) == []
