from dataclasses import dataclass, field
from typing import Literal

import pytest

from unified.config import ConfigError, dump_yaml, from_dict, load_config, parse_override, yaml_key_lines
from unified.engine.experiment import ExperimentConfig, load_experiment
from unified.implicit import ImplicitForm


@dataclass
class Inner:
    size: int = 3
    mode: Literal["a", "b"] = "a"


@dataclass
class Outer:
    name: str = "x"
    rate: float = 0.1
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    maybe: int | None = None


def write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_load_nested_and_types(tmp_path):
    cfg = load_config(
        Outer, write(tmp_path, "name: y\nrate: 1\ninner:\n  size: 5\n  mode: b\ntags: [p, q]\n")
    )
    assert cfg == Outer(name="y", rate=1.0, inner=Inner(size=5, mode="b"), tags=["p", "q"])
    assert isinstance(cfg.rate, float)


def test_unknown_key_names_file_line_and_closest(tmp_path):
    path = write(tmp_path, "name: y\ninner:\n  sise: 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(Outer, path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message
    assert "'inner.sise'" in message and "Did you mean 'size'?" in message


def test_wrong_type_and_literal(tmp_path):
    with pytest.raises(ConfigError, match="'rate'.*expected a number"):
        load_config(Outer, write(tmp_path, "rate: fast\n"))
    with pytest.raises(ConfigError, match=r"'inner.mode'.*not one of \['a', 'b'\]"):
        load_config(Outer, write(tmp_path, "inner: {mode: c}\n"))
    with pytest.raises(ConfigError, match="expected true or false"):
        load_config(ExperimentConfig, data={"exist_ok": "yes"})


@dataclass
class Choices:
    form: ImplicitForm | None = None
    level: Literal[1, 2] = 1


@dataclass
class Empty:
    pass


def test_literal_fields_accept_only_their_values_with_a_hint():
    assert from_dict(Choices, {"form": "mf", "level": 2}) == Choices("mf", 2)
    assert from_dict(Choices, {"form": None}).form is None  # optional Literal
    with pytest.raises(
        ConfigError,
        match=r"key 'head.form': 'vectr' is not one of \['vector', 'nn', 'mf'\]\. "
        r"Did you mean 'vector'\?",
    ):
        from_dict(Choices, {"form": "vectr"}, prefix="head")
    # Equal is not enough: YAML `true` and `1.0` are not the integer 1.
    for wrong in (True, 1.0, "1"):
        with pytest.raises(ConfigError, match=r"key 'level': .* is not one of \[1, 2\]"):
            from_dict(Choices, {"level": wrong})
    with pytest.raises(ConfigError, match=r"Write 1 \(type int, not str\)"):
        from_dict(Choices, {"level": "1"})


def test_a_section_without_keys_says_so():
    with pytest.raises(ConfigError, match=r"key 'opts.x': unknown key. This section takes no keys"):
        from_dict(Empty, {"x": 1}, prefix="opts")


def test_overrides_apply_and_are_checked(tmp_path):
    path = write(tmp_path, "name: y\n")
    cfg = load_config(Outer, path, overrides=["inner.size=7", "tags=[a]", "maybe=null"])
    assert cfg.inner.size == 7 and cfg.tags == ["a"] and cfg.maybe is None
    with pytest.raises(ConfigError, match="command-line override 'inner.sizee=7'"):
        load_config(Outer, path, overrides=["inner.sizee=7"])
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        parse_override("inner.size")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(Outer, path, overrides=["name.x=1"])


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"cfg.yaml, line \d+: invalid YAML"):
        load_config(Outer, write(tmp_path, "name: [unclosed\nrate: 2\n"))
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(Outer, write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_dump_round_trip(tmp_path):
    cfg = load_experiment(None, ["train.epochs=3", "balancer.name=uncertainty", "tasks=[detect, jde]"])
    text = dump_yaml(cfg)
    again = load_config(ExperimentConfig, write(tmp_path, text))
    assert again == cfg


def test_value_checks_name_the_key():
    with pytest.raises(ConfigError, match="train.img_size"):
        load_experiment(None, ["train.img_size=100"])
    with pytest.raises(ConfigError, match="'tasks'"):
        load_experiment(None, ["tasks=[]"])


def test_key_lines():
    lines = yaml_key_lines("a: 1\nb:\n  c: 2\n  d: [1, 2]\n")
    assert lines == {"a": 1, "b": 2, "b.c": 3, "b.d": 4, "b.d.0": 4, "b.d.1": 4}
