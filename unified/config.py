"""YAML configs loaded into dataclasses that reject what they do not know.

The schema lives in code (dataclasses); YAML only fills it. Every error names the file, the line where
it can be read, the dotted key and, for unknown keys, the closest valid key. ``key.sub=value``
overrides apply on top of the file, and a resolved config dumps back to YAML that reloads to an equal
object.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A config value or key is wrong; the message names the source, the line and the key."""


def _where(source: str | None, key: str, lines: Mapping[str, int] | None) -> str:
    line = (lines or {}).get(key)
    place = source or "<config>"
    if line is not None:
        place += f", line {line}"
    return f"{place}: key {key!r}" if key else place


def yaml_key_lines(text: str) -> dict[str, int]:
    """Map every dotted key path of a YAML document to its 1-based line number."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                key = f"{prefix}.{index}"
                lines[key] = item.start_mark.line + 1
                walk(item, key)

    if root is not None:
        walk(root, "")
    return lines


def read_yaml(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Read a YAML mapping and its key line numbers.

    Raises:
        ConfigError: if the file is missing, is not valid YAML, or is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data, yaml_key_lines(text)


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``a.b=value`` into the dotted key and the YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r}: the value {raw!r} is not valid YAML") from None
    return key, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``key.sub=value`` overrides applied (keys are checked later)."""
    result = _deepcopy(data)
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"override {text!r}: {'.'.join(parts[: depth + 1])!r} is a value, not a section"
                )
            node = child
        node[parts[-1]] = value
    return result


def _deepcopy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deepcopy(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, source: str | None, lines: Mapping[str, int] | None) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert YAML shapes (lists, dicts)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key, source, lines)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{_where(source, key, lines)}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{_where(source, key, lines)}: {value!r} is not one of {list(allowed)}.{hint}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(source, key, lines)}: expected a mapping, got {value!r}")
        return from_dict(tp, value, source=source, lines=lines, prefix=key)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_where(source, key, lines)}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(
                    f"{_where(source, key, lines)}: expected {len(args)} values, got {len(value)}"
                )
            return tuple(
                _convert(v, a, f"{key}.{i}", source, lines) for i, (v, a) in enumerate(zip(args, value))
            )
        item = args[0] if args else Any
        items = [_convert(v, item, f"{key}.{i}", source, lines) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(source, key, lines)}: expected a mapping, got {value!r}")
        args = get_args(tp)
        item = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, item, f"{key}.{k}", source, lines) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{_where(source, key, lines)}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{_where(source, key, lines)}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{_where(source, key, lines)}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{_where(source, key, lines)}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{_where(source, key, lines)}: {value!r} is not a valid {_type_name(tp)}")


def from_dict(
    cls: type[C],
    data: Mapping[str, Any],
    *,
    source: str | None = None,
    lines: Mapping[str, int] | None = None,
    prefix: str = "",
) -> C:
    """Build the dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types.

    Raises:
        ConfigError: naming the source, line, dotted key and the closest valid key.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_where(source, prefix, lines)}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{_where(source, dotted, lines)}: unknown key.{hint} Valid keys here: {', '.join(fields)}"
            )
        kwargs[key] = _convert(value, hints[key], dotted, source, lines)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        keys = ", ".join(f"{prefix}.{m}" if prefix else m for m in missing)
        raise ConfigError(f"{source or '<config>'}: required key(s) missing: {keys}")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{_where(source, prefix, lines)}: {exc}") from None
    return obj


def check(condition: bool, key: str, message: str) -> None:
    """Validate a value inside a dataclass ``__post_init__``; the loader adds file and line."""
    if not condition:
        raise ConfigError(f"key {key!r}: {message}")


def to_dict(obj: Any) -> Any:
    """Turn a config dataclass (recursively) into plain YAML-safe Python data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def dump_yaml(obj: Any) -> str:
    """The resolved config as YAML text; ``load_config`` of it gives an equal object."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def load_config(
    cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = (), data: Mapping | None = None
) -> C:
    """Load ``cls`` from a YAML file (or a mapping) with command-line overrides on top.

    Raises:
        ConfigError: naming the file, line and key of any problem.
    """
    lines: dict[str, int] = {}
    source = str(path) if path is not None else "<dict>"
    if path is not None:
        raw, lines = read_yaml(path)
    else:
        raw = dict(data or {})
    merged = apply_overrides(raw, overrides)
    for text in overrides:
        lines.setdefault(text.partition("=")[0].strip(), 0)
    override_lines = {k: v for k, v in lines.items() if v}
    try:
        return from_dict(cls, merged, source=source, lines=override_lines)
    except ConfigError as exc:
        for text in overrides:
            key = text.partition("=")[0].strip()
            if f"'{key}'" in str(exc) or f"'{key}." in str(exc):
                raise ConfigError(f"{exc} (set by the command-line override {text!r})") from None
        raise
