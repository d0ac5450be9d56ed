"""DetectionLossConfig is a checked config dataclass: bad values name their key wherever it sits."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from unified.config import ConfigError, check, from_dict
from unified.losses import DetectionLossConfig


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("box", -0.1, "a loss gain must be >= 0"),
        ("cls", float("inf"), "expected a finite number, got inf"),
        ("obj_pw", 0.0, "a BCE positive weight must be > 0"),
        ("anchor_t", 1.0, "must be > 1"),
        ("fl_gamma", -1.0, "must be >= 0"),
        ("fl_alpha", 1.5, "must be in [0, 1]"),
        ("label_smoothing", 1.0, "must be in [0, 1)"),
        ("iou_ratio", -0.5, "must be in [0, 1]"),
        ("balance", [4.0, -1.0, 0.4], "'task_options.detect.balance.1': must be >= 0"),
    ],
)
def test_bad_values_name_the_key_under_its_section(key, value, problem):
    with pytest.raises(ConfigError) as info:
        from_dict(DetectionLossConfig, {key: value}, source="exp.yaml", prefix="task_options.detect")
    message = str(info.value)
    assert message.startswith("exp.yaml: key 'task_options.detect.") and problem in message, message
    assert f"'task_options.detect.{key}" in message


def test_defaults_and_presets_are_valid():
    assert DetectionLossConfig() == DetectionLossConfig.scratch_640()
    assert DetectionLossConfig.scratch_1280().obj == 1.0
    with pytest.raises(ConfigError, match="key 'anchor_t': must be > 1"):
        DetectionLossConfig(anchor_t=0.5)  # built in code: the key relative to the dataclass


@dataclass
class _Shared:
    share_implicit: dict[str, str] = field(default_factory=dict)


@dataclass
class _TaskOptions(_Shared, DetectionLossConfig):
    """What a task config that inherits the loss options looks like (flat keys, as users write them)."""

    conf_thres: float = 0.001

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 <= self.conf_thres < 1, "conf_thres", "must be in [0, 1)")


@dataclass
class _Nested:
    loss: DetectionLossConfig = field(default_factory=DetectionLossConfig)


def test_a_task_config_can_inherit_or_hold_it():
    cfg = from_dict(_TaskOptions, {"cls": 4.8, "conf_thres": 0.1}, prefix="task_options.detect")
    assert isinstance(cfg, DetectionLossConfig) and cfg.cls == 4.8 and cfg.anchor_t == 4.0
    with pytest.raises(ConfigError, match="key 'task_options.detect.anchor_t': must be > 1"):
        from_dict(_TaskOptions, {"anchor_t": 1}, prefix="task_options.detect")
    with pytest.raises(ConfigError, match="key 'task_options.detect.conf_thres'"):
        from_dict(_TaskOptions, {"conf_thres": 2.0}, prefix="task_options.detect")
    with pytest.raises(ConfigError, match="key 'task_options.detect.loss.fl_alpha': must be in"):
        from_dict(_Nested, {"loss": {"fl_alpha": 2.0}}, prefix="task_options.detect")
