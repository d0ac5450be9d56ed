"""Bad configs: random and malformed YAML and ``key=value`` overrides never escape as anything but a
``ConfigError`` that names the file/line or the key, and nothing given is silently dropped."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.helpers import train_overrides
from tests.tools.helpers import load_tool
from unified.config import ConfigError, to_dict
from unified.engine.experiment import ExperimentConfig, load_experiment

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The properties that dump and reload a whole experiment per example (~0.1 s each) run fewer examples.
SETTINGS_WHOLE_FILE = settings(SETTINGS, max_examples=100)
DEFAULT = to_dict(ExperimentConfig())
# Sections whose content the loader validates key by key (dataclasses).
SECTIONS = ["", "balancer", "optim", "augment", "train", "eval", "implicit", "synthetic"]
SECTION_KEYS = {
    "": list(DEFAULT),
    **{name: list(DEFAULT[name]) for name in SECTIONS[1:] if name != "synthetic"},
    "synthetic": ["out", "images", "val_images", "sequences", "val_sequences", "frames", "size", "seed"],
}
# Every typed leaf of the schema (values under ``model``, ``task_options``, ``balancer.options`` and
# ``balancer.weights`` are free-form here and checked when the run starts: see test_free_form_sections).
LEAVES = [f"{s}.{k}" if s else k for s, keys in SECTION_KEYS.items() for k in keys if k not in SECTIONS]

_WORKDIR = Path(tempfile.mkdtemp(prefix="bad-configs-"))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["detect", "jdc", "sgd", "cosine", "fp32", "cpu", "fixed", "3", "1e-3", "yes", "~"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
key_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12)


def write_yaml(text: str | bytes) -> Path:
    path = _WORKDIR / "experiment.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def set_path(data: dict, dotted: str, value: Any) -> dict:
    data = yaml.safe_load(yaml.safe_dump(data))  # a deep copy
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return data


def get_path(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


def same(a: Any, b: Any) -> bool:
    """Equal as config values: numbers compare by value, NaN equals NaN, tuples equal lists."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return (math.isnan(a) and math.isnan(b)) if isinstance(a, float) and math.isnan(a) else a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@SETTINGS
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_random_text_is_a_config_or_a_config_error_naming_the_file(text):
    path = write_yaml(text)
    try:
        load_experiment(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path)), str(exc)


@SETTINGS
@given(st.binary(max_size=120))
def test_random_bytes_are_a_config_or_a_config_error_naming_the_file(data):
    path = write_yaml(data)
    try:
        load_experiment(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path)), str(exc)


@SETTINGS_WHOLE_FILE
@given(st.sampled_from(LEAVES), values)
def test_any_value_at_any_key_is_kept_exactly_or_refused_naming_the_key(key, value):
    path = write_yaml(yaml.safe_dump(set_path(DEFAULT, key, value)))
    try:
        cfg = load_experiment(path)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(str(path)), message
        leaf = key.rsplit(".", 1)[-1]
        assert f"'{key}" in message or f"'{leaf}'" in message, (key, message)
        return
    assert same(get_path(to_dict(cfg), key), value), (
        f"{key}: gave {value!r}, loaded {get_path(to_dict(cfg), key)!r}"
    )


@SETTINGS_WHOLE_FILE
@given(st.sampled_from(SECTIONS), key_names, values)
def test_an_unknown_key_anywhere_is_an_error_naming_it(section, name, value):
    keys = SECTION_KEYS[section]
    if name in keys:
        return
    dotted = f"{section}.{name}" if section else name
    data = set_path(DEFAULT, section, {}) if section == "synthetic" else DEFAULT
    path = write_yaml(yaml.safe_dump(set_path(data, dotted, value)))
    with pytest.raises(ConfigError, match="unknown key") as info:
        load_experiment(path)
    assert f"'{dotted}'" in str(info.value) and "line " in str(info.value)


@SETTINGS
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_random_override_strings(text):
    try:
        load_experiment(None, [text])
    except ConfigError as exc:
        message = str(exc)
        top = text.partition("=")[0].strip().split(".")[0]
        assert "override" in message or repr(top)[:-1] in message, message


@SETTINGS
@given(st.sampled_from(LEAVES + ["model.nc", "balancer.options.x", "task_options.detect.conf"]), values)
def test_overrides_are_kept_exactly_or_refused_naming_the_override(key, value):
    text = f"{key}={yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix('...').strip()}"
    try:
        cfg = load_experiment(None, [text])
    except ConfigError as exc:
        assert "override" in str(exc) and key.split(".")[0] in str(exc), str(exc)
        return
    assert same(get_path(to_dict(cfg), key), value), f"{text}: loaded {get_path(to_dict(cfg), key)!r}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train:\n  epochs: 3\ntrain:\n  batch_size: 2\n", "line 3: key 'train' appears twice"),
        ("optim:\n  lr0: 0.1\n  lr0: 0.2\n", "line 3: key 'lr0' appears twice"),
        ("tasks: &a [detect, *a]\n", "line 1: a recursive alias"),
        ("model: " + "[" * 500 + "]" * 500 + "\n", "nested"),
        ("model: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n", "nested"),
        (
            "model:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"  {c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcde", "bcdef")),
            "more than 100000 values",
        ),
        ("optim:\n  lr0: " + "9" * 400 + "\n", "line 2: key 'optim.lr0': 999999999999... is too large"),
        ("optim:\n  ema_ramp: .nan\n", "line 2: key 'optim.ema_ramp': expected a number, got NaN"),
        ("train: !!python/object/apply:os.system [echo pwned]\n", "line 1: invalid YAML"),
        ("a: 1\n---\nb: 2\n", "invalid YAML"),
    ],
)
def test_malformed_documents_found_by_the_properties(text, expected):
    """Each of these escaped as RecursionError/OverflowError, hung, or silently dropped a value before."""
    path = write_yaml(text)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert str(info.value).startswith(str(path)) and expected in str(info.value), str(info.value)


def test_binary_file_and_override_aliases():
    path = write_yaml(b"train:\n  epochs: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not a text file"):
        load_experiment(path)
    with pytest.raises(ConfigError, match="override 'tasks=&a \\[\\*a\\]'.*recursive alias"):
        load_experiment(None, ["tasks=&a [*a]"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("task_options.detect.bogus=1", "key 'task_options.detect.bogus': unknown key"),
        ("task_options.detect.conf_thres=abc", "key 'task_options.detect.conf_thres': expected a number"),
        ("task_options.jdc.x=1", "key 'task_options.jdc': task 'jdc' is not enabled"),
        ("balancer.options.bogus=1", "key 'balancer.options.bogus': unknown key"),
        ("balancer.weights.jde=2.0", "not enabled: ['jde']"),
        ("implicit_share.bogus=detect.ia.0", "key 'implicit_share.bogus': no layer or head"),
        ("model={nc: 5, bogus: 1}", "key 'bogus': unknown key"),
        ("balancer.name=fixd", "Did you mean 'fixed'"),
    ],
)
def test_free_form_sections_are_checked_when_the_run_starts(
    tmp_path, capsys, small_world, model_yaml, override, expected
):
    """Sections whose keys depend on the enabled tasks, the balancer or the model are checked by the
    command line before training; each used to be a traceback (balancer options) or silently ignored
    (an implicit_share alias nothing reads)."""
    args = train_overrides(model_yaml, small_world, tmp_path, "run", **{"train.epochs": 1, "plugins": "[]"})
    code = load_tool("train_multitask").main(["--no-progress", *args, override])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert not (tmp_path / "run" / "weights" / "last.pt").exists()
