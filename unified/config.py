"""YAML configs loaded into dataclasses that reject what they do not know.

The schema lives in code (dataclasses); YAML only fills it. Every error names the file, the line where
it can be read, the dotted key and, for unknown keys, the closest valid key. ``key.sub=value``
overrides apply on top of the file, and a resolved config dumps back to YAML that reloads to an equal
object.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A config value or key is wrong; the message names the source, the line and the key."""


#: Through aliases a small YAML text can stand for a huge document ("billion laughs"): more values than
#: this are refused before anything is built.
MAX_YAML_VALUES = 100_000
#: Deeper nesting than this is refused (PyYAML and the loader recurse per level).
MAX_YAML_DEPTH = 64

#: Floats that YAML 1.1 reads as strings but YAML 1.2 (and every user) reads as numbers: ``1e-3``, ``5E4``,
#: ``1.0e3`` (1.1 wants a dot and a signed exponent, so ``optim.lr0: 1e-3`` was "expected a number").
_SCIENTIFIC = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_FLOAT_TAG = "tag:yaml.org,2002:float"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads scientific notation as a float."""


_Loader.add_implicit_resolver(_FLOAT_TAG, _SCIENTIFIC, list("-+0123456789."))
# The safe dumper must then quote the string "1e-3", or dump_yaml (and any yaml.safe_dump of a config)
# would write text that reads back as a number. Quoting is harmless to every other reader.
yaml.SafeDumper.add_implicit_resolver(_FLOAT_TAG, _SCIENTIFIC, list("-+0123456789."))


def _check_yaml_graph(root: yaml.Node, place: str) -> None:
    """Refuse recursive aliases, alias bombs, excessive nesting and duplicate keys in a composed document.

    YAML silently keeps the last of two equal keys; a config must not lose a value that way.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # Iterative depth-first walk: (node, depth, children pushed yet?).
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, expanded = stack.pop()
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                children += [key_node, value_node]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if expanded:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(node)] > MAX_YAML_VALUES:
                raise ConfigError(
                    f"{place}, line {node.start_mark.line + 1}: the document expands (through aliases) to more "
                    f"than {MAX_YAML_VALUES} values; refusing it"
                )
            continue
        if id(node) in sizes:
            continue  # an alias of a node already measured
        if id(node) in on_path:
            raise ConfigError(
                f"{place}, line {node.start_mark.line + 1}: a recursive alias (an anchor used inside itself)"
            )
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(
                f"{place}, line {node.start_mark.line + 1}: nested deeper than {MAX_YAML_DEPTH} levels"
            )
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key_node.start_mark.line + 1
                if key_node.value in first:
                    raise ConfigError(
                        f"{place}, line {line}: key {key_node.value!r} appears twice in one mapping (first at "
                        f"line {first[key_node.value]}); YAML would silently keep only the last value"
                    )
                first[key_node.value] = line
        on_path.add(id(node))
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in children if id(child) not in sizes)


def load_yaml_text(text: str, place: str) -> Any:
    """Parse YAML text safely (plain data only) into Python data, refusing what :func:`_check_yaml_graph` refuses.

    Args:
        text: The YAML document.
        place: Where it comes from (a file name, an override), for error messages.

    Raises:
        ConfigError: for invalid YAML (with its line), a recursive or exploding alias, excessive nesting or a
            duplicate key.
    """
    try:
        loader = _Loader(text)  # checks for unprintable characters already
    except yaml.YAMLError as exc:
        raise ConfigError(f"{place}: invalid YAML: {exc}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_graph(node, place)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{place}{line}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{place}: nested too deeply to read") from None
    finally:
        loader.dispose()


def _where(source: str | None, key: str, lines: Mapping[str, int] | None) -> str:
    line = (lines or {}).get(key)
    place = source or "<config>"
    if line is not None:
        place += f", line {line}"
    return f"{place}: key {key!r}" if key else place


def yaml_key_lines(text: str) -> dict[str, int]:
    """Map every dotted key path of a YAML document to its 1-based line number."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except (yaml.YAMLError, RecursionError):
        return {}
    lines: dict[str, int] = {}
    seen: set[int] = set()

    def walk(node: yaml.Node, prefix: str) -> None:
        if id(node) in seen or prefix.count(".") >= MAX_YAML_DEPTH:
            return  # an alias of a node already walked (aliases could make the walk exponential)
        seen.add(id(node))
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
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None
    data = load_yaml_text(text, str(path))
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
    value = load_yaml_text(raw, f"override {text!r}: value {raw!r}") if raw.strip() else None
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
        return _convert_union(value, tp, key, source, lines)
    if origin is Literal:
        return _check_literal(value, tp, key, source, lines)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(source, key, lines)}: expected a mapping, got {value!r}")
        return from_dict(tp, value, source=source, lines=lines, prefix=key)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        return _convert_sequence(value, tp, key, source, lines)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(source, key, lines)}: expected a mapping, got {value!r}")
        args = get_args(tp)
        item = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, item, f"{key}.{k}", source, lines) for k, v in value.items()}
    if tp in (bool, int, float, str):
        return _check_scalar(value, tp, key, source, lines)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{_where(source, key, lines)}: {value!r} is not a valid {_type_name(tp)}")


def _convert_union(value: Any, tp: Any, key: str, source: str | None, lines: Mapping[str, int] | None) -> Any:
    """The first option of a ``Union`` that ``value`` converts to (``None`` only where the union allows it)."""
    options = get_args(tp)
    if value is None and type(None) in options:
        return None
    concrete = [option for option in options if option is not type(None)]
    if len(concrete) == 1:  # ``X | None``: X's own error names the exact key
        return _convert(value, concrete[0], key, source, lines)
    for option in concrete:
        try:
            return _convert(value, option, key, source, lines)
        except ConfigError:
            continue
    raise ConfigError(f"{_where(source, key, lines)}: {value!r} is not a valid {_type_name(tp)}")


def _check_literal(value: Any, tp: Any, key: str, source: str | None, lines: Mapping[str, int] | None) -> Any:
    allowed = get_args(tp)
    # Same type as well as equal: ``True == 1`` and ``1.0 == 1`` must not pass for a Literal[1].
    if not any(type(value) is type(a) and value == a for a in allowed):
        same_text = [a for a in allowed if str(a) == str(value)]
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        if same_text:  # e.g. "1" for a Literal[1]: say which type is wanted, not "did you mean '1'"
            wanted, given = type(same_text[0]).__name__, type(value).__name__
            hint = f" Write {same_text[0]!r} (type {wanted}, not {given})."
        else:
            hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{_where(source, key, lines)}: {value!r} is not one of {list(allowed)}.{hint}")
    return value


def _convert_sequence(
    value: Any, tp: Any, key: str, source: str | None, lines: Mapping[str, int] | None
) -> list[Any] | tuple[Any, ...]:
    """A YAML list as ``list[X]``, ``Sequence[X]``, ``tuple[X, ...]`` or a fixed-length ``tuple[X, Y]``."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{_where(source, key, lines)}: expected a list, got {value!r}")
    origin, args = get_origin(tp), get_args(tp)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(args) != len(value):
            raise ConfigError(f"{_where(source, key, lines)}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{key}.{i}", source, lines) for i, (v, a) in enumerate(zip(args, value)))
    item = args[0] if args else Any
    items = [_convert(v, item, f"{key}.{i}", source, lines) for i, v in enumerate(value)]
    return tuple(items) if origin is tuple or tp is tuple else items


def _check_scalar(value: Any, tp: type, key: str, source: str | None, lines: Mapping[str, int] | None) -> Any:
    """``bool``, ``int``, ``float`` or ``str`` as YAML wrote it: nothing is coerced but an int to a float."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{_where(source, key, lines)}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{_where(source, key, lines)}: expected an integer, got {value!r}")
    if tp is float:
        return _check_float(value, _where(source, key, lines))
    if isinstance(value, str):
        return value
    hint = ""
    if isinstance(value, int) and not isinstance(value, bool):  # e.g. train.device=0
        hint = (
            f" (a number to YAML; quote it for text: '{value}' in a file, \"{key}='{value}'\" in an override)"
        )
    elif isinstance(value, float):
        hint = " (a number to YAML; quote it for text)"
    raise ConfigError(f"{_where(source, key, lines)}: expected a string, got {value!r}{hint}")


def _check_float(value: Any, where: str) -> float:
    """A finite number: the one rule of every float field (no schedule, weight or threshold means NaN or
    infinity; ``optim.lr0: .inf`` used to train into NaN weights that were then saved as a success)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise ConfigError(f"{where}: {str(value)[:12]}... is too large a number") from None
    if math.isnan(number):
        raise ConfigError(f"{where}: expected a number, got NaN")
    if math.isinf(number):  # .inf, or a literal such as 1.0e+999 that overflows to it
        raise ConfigError(f"{where}: expected a finite number, got {number} (too large, or infinite)")
    return number


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
            nested = _sections_with_key(hints, fields, key, dotted[: -len(key)])
            close = nested or difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            valid = f"Valid keys here: {', '.join(fields)}" if fields else "This section takes no keys."
            raise ConfigError(f"{_where(source, dotted, lines)}: unknown key.{hint} {valid}")
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
    except _CheckFailed as exc:
        # ``check`` names the key relative to the file's root or to this dataclass; add file and line.
        inside = not prefix or exc.key == prefix or exc.key.startswith(f"{prefix}.")
        key = exc.key if inside else f"{prefix}.{exc.key}"
        raise ConfigError(f"{_where(source, key, lines)}: {exc.problem}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{_where(source, prefix, lines)}: {exc}") from None
    return obj


class _CheckFailed(ConfigError):
    """Raised by :func:`check`; :func:`from_dict` turns it into a ConfigError with file and line."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"key {key!r}: {problem}")
        self.key = key
        self.problem = problem


def check(condition: bool, key: str, message: str) -> None:
    """Validate a value inside a dataclass ``__post_init__``; the loader adds file and line."""
    if not condition:
        raise _CheckFailed(key, message)


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


def _sections_with_key(
    hints: Mapping[str, Any], fields: Mapping[str, dataclasses.Field], key: str, prefix: str
) -> list[str]:
    """``section.key`` for every dataclass section here that has ``key`` (``epochs`` -> ``train.epochs``)."""
    found = []
    for name in fields:
        kinds = typing.get_args(hints[name]) or (hints[name],)  # `X | None` sections too
        for kind in kinds:
            if dataclasses.is_dataclass(kind) and key in {f.name for f in dataclasses.fields(kind)}:
                found.append(f"{prefix}{name}.{key}")
    return found


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
        # The last override of a key is the one that took effect (the flags come before the user's own).
        for text in reversed(overrides):
            key = text.partition("=")[0].strip()
            if f"'{key}'" in str(exc) or f"'{key}." in str(exc):
                raise ConfigError(f"{exc} (set by the command-line override {text!r})") from None
        raise
