"""The official ``main`` branch: darknet ``.cfg`` files and state_dicts keyed ``module_list.{i}.*``.

:func:`parse_darknet_cfg` reads a cfg into sections (as the official parser does: ``#`` comments, ``key=value``
lines, a ``[net]`` section first). :func:`translate_darknet` turns the sections into our model config, one
body row per darknet section:

=============================  ==================================================================
darknet section                 our row
=============================  ==================================================================
``convolutional`` (BN)         ``Conv [filters, size, stride(, groups, act)]`` (BN eps 1e-4, momentum 0.03)
``convolutional`` (no BN)      ``PlainConv [filters, size, stride, groups]`` (linear, with bias)
``route``                      ``Concat`` over the listed layers (one layer: a pass-through)
``shortcut``                   ``Shortcut`` of the previous layer and ``from``
``maxpool`` / ``upsample``     ``MaxPool [size, stride]`` / ``Upsample [stride]``
``reorg``                      ``ReOrg``
``shift_channels from=A``      ``ImplicitAdd`` with bank tensor ``darknet.A`` (outside the head)
``control_channels from=M``    ``ImplicitMul`` with bank tensor ``darknet.M`` (outside the head)
``implicit_add/mul``           no row: the tensor lives in the implicit bank
=============================  ==================================================================

The detection head comes from the ``yolo`` sections. Each is preceded by ``[shift_channels from=A]``,
a linear 1×1 ``convolutional`` with bias and ``[control_channels from=M]`` (or by the 1×1 conv alone, for the
``yolov4`` baselines without implicit knowledge); level ``l`` (the ``l``-th ``yolo`` section) then reads the
section before that group, its 1×1 conv is ``heads.detect.m.{l}``, and ``A`` / ``M`` are the bank tensors
``detect.ia.{l}`` / ``detect.im.{l}`` (a tensor shared by several levels becomes an ``implicit_share``
alias). Anchors are ``anchors[mask]`` in pixels, the class count is ``classes``, and the strides are the
feature strides (8, 16, 32, ... in ``yolo`` order, as the official code assumes).

Weights: ``module_list.{i}.Conv2d.*`` / ``BatchNorm2d.*`` of section ``i`` go to the row of section ``i``
(``body.layers.{r}.conv.*`` / ``bn.*``) or to the head conv; ``module_list.{A}.implicit`` to the bank.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unified.interop.common import ConvertedModel, InteropError, map_state_dict, numbered_names

#: The official ``main`` branch BatchNorm settings (``models/models.py``).
DARKNET_NORM = {"eps": 1e-4, "momentum": 0.03}

#: darknet activation names the official PyTorch code applies, and ours.
DARKNET_ACTIVATIONS = {"silu": "silu", "swish": "silu", "mish": "mish", "leaky": "leaky", "linear": "linear"}

SUPPORTED_SECTIONS = (
    "convolutional",
    "route",
    "shortcut",
    "upsample",
    "maxpool",
    "reorg",
    "implicit_add",
    "implicit_mul",
    "shift_channels",
    "control_channels",
    "yolo",
)


@dataclass
class DarknetSection:
    """One ``[type]`` section of a darknet cfg.

    Attributes:
        type: The section name (``convolutional``).
        options: Its ``key=value`` lines, values as written (stripped).
        line: Line number of the ``[type]`` header in the file.
        index: Position among the layer sections (``[net]`` excluded): the official ``module_list`` index.
    """

    type: str
    options: dict[str, str] = field(default_factory=dict)
    line: int = 0
    index: int = -1


def parse_darknet_cfg(
    source: str | Path, text: str | None = None
) -> tuple[DarknetSection, list[DarknetSection]]:
    """Read a darknet cfg: the ``[net]`` section and the layer sections in order.

    Args:
        source: The cfg path (read unless ``text`` is given; shown in errors).
        text: The cfg content, if already read.

    Raises:
        InteropError: for a ``key=value`` line outside a section, a line that is neither, or no ``[net]``.
    """
    source = str(source)
    if text is None:
        try:
            text = Path(source).read_text()
        except OSError as exc:
            raise InteropError(f"cannot read darknet cfg {source}: {exc}") from None
    sections: list[DarknetSection] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise InteropError(f"{source}, line {number}: malformed section header {raw.strip()!r}")
            sections.append(DarknetSection(line[1:-1].strip(), line=number))
            continue
        if "=" not in line:
            raise InteropError(
                f"{source}, line {number}: expected 'key=value' or '[section]', got {raw.strip()!r}"
            )
        if not sections:
            raise InteropError(f"{source}, line {number}: 'key=value' before the first [section]")
        key, value = line.split("=", 1)
        sections[-1].options[key.strip()] = value.strip()
    if not sections or sections[0].type != "net":
        raise InteropError(f"{source}: a darknet cfg starts with a [net] section")
    layers = sections[1:]
    for index, section in enumerate(layers):
        section.index = index
    return sections[0], layers


class _Cfg:
    """Typed option access with errors that name the file, line and section."""

    def __init__(self, source: str, section: DarknetSection) -> None:
        self.source = source
        self.section = section

    def where(self) -> str:
        return f"{self.source}, line {self.section.line}: section {self.section.index} [{self.section.type}]"

    def fail(self, message: str) -> InteropError:
        return InteropError(f"{self.where()}: {message}")

    def integer(self, key: str, default: int | None = None) -> int:
        value = self.section.options.get(key)
        if value is None:
            if default is None:
                raise self.fail(f"missing '{key}='")
            return default
        try:
            return int(value)
        except ValueError:
            raise self.fail(f"'{key}={value}' is not an integer") from None

    def integers(self, key: str) -> list[int]:
        value = self.section.options.get(key)
        if value is None:
            raise self.fail(f"missing '{key}='")
        try:
            return [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise self.fail(f"'{key}={value}' is not a list of integers") from None

    def numbers(self, key: str) -> list[float]:
        value = self.section.options.get(key)
        if value is None:
            raise self.fail(f"missing '{key}='")
        try:
            return [float(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise self.fail(f"'{key}={value}' is not a list of numbers") from None

    def text(self, key: str, default: str) -> str:
        return self.section.options.get(key, default).strip()

    def ref(self, value: int) -> int:
        """A layer reference as an absolute section index (negative values count back from this section)."""
        target = self.section.index + value if value < 0 else value
        if not 0 <= target < self.section.index:
            raise self.fail(f"refers to layer {value} (section {target}), which is not an earlier section")
        return target


@dataclass
class _HeadLevel:
    feature: int  # section whose output the level reads
    conv: int  # the linear 1×1 conv section
    shift: int | None  # implicit_add section (via shift_channels)
    control: int | None  # implicit_mul section (via control_channels)
    anchors: list[float]
    classes: int
    yolo: int


@dataclass
class DarknetTranslation:
    """A darknet cfg as our model config plus the map from official weight keys to ours.

    Attributes:
        model_config: Our model YAML as a dict.
        key_map: ``module_list.{i}.<...>`` -> our state_dict key, for every tensor the official model has.
        implicit_share: Bank aliases for implicit tensors shared by several head levels.
        section_rows: Darknet section index -> our body row (only sections that became rows).
        sections: The parsed layer sections.
        source: The cfg path.
    """

    model_config: dict[str, Any]
    key_map: dict[str, str]
    implicit_share: dict[str, str]
    section_rows: dict[int, int]
    sections: list[DarknetSection]
    source: str

    def describe_official(self, key: str) -> str:
        """``darknet section 12 [convolutional] (line 95)`` for a ``module_list.12.*`` key."""
        match = re.match(r"module_list\.(\d+)\.", key)
        if match and int(match.group(1)) < len(self.sections):
            s = self.sections[int(match.group(1))]
            return f"darknet section {s.index} [{s.type}], {self.source} line {s.line}"
        return "not a darknet layer key"

    def describe_own(self, key: str) -> str:
        parts = key.split(".")
        if parts[0] == "body" and len(parts) > 2 and parts[2].isdigit():
            row = int(parts[2])
            sections = [s for s, r in self.section_rows.items() if r == row]
            return f"body row {row}" + (f" = darknet section {sections[0]}" if sections else "")
        return "detection head" if parts[0] == "heads" else "implicit bank"


def translate_darknet(source: str | Path, text: str | None = None) -> DarknetTranslation:
    """Translate a darknet cfg into our model config and the official -> our weight key map.

    Raises:
        InteropError: naming the file, line and section of an unsupported section or option, a reference to
            a layer that has no feature map, or a ``yolo`` section without the expected head layers.
    """
    source = str(source)
    _, sections = parse_darknet_cfg(source, text)
    _check_supported(source, sections)
    levels, head_sections = _find_heads(source, sections)
    model_act = _model_activation(source, sections, head_sections)
    body = _BodyRows(source, sections, model_act)
    constants = {s.index for s in sections if s.type in ("implicit_add", "implicit_mul")}
    for section in sections:
        if section.index not in head_sections and section.index not in constants:
            body.add(section)
    outputs, implicit, implicit_share = _translate_head(source, sections, levels, body)
    nc, anchors = _head_geometry(source, levels)
    config = {
        "description": f"converted from the official darknet cfg {Path(source).name}",
        "nc": nc,
        "norm": dict(DARKNET_NORM),
        "activation": model_act,
        "anchors": anchors,
        "backbone": body.rows,
        "outputs": outputs,
        "head": {"implicit": implicit},
    }
    return DarknetTranslation(config, body.key_map, implicit_share, body.row_of, sections, source)


def _check_supported(source: str, sections: list[DarknetSection]) -> None:
    for section in sections:
        if section.type not in SUPPORTED_SECTIONS:
            raise _Cfg(source, section).fail(
                f"darknet layer type '{section.type}' is not supported (supported: {', '.join(SUPPORTED_SECTIONS)})"
            )


def _model_activation(source: str, sections: list[DarknetSection], head_sections: set[int]) -> str:
    """Most convolutions share one activation: make it the model's and spell out only the others."""
    acts = Counter(
        _activation(_Cfg(source, s))
        for s in sections
        if s.type == "convolutional"
        and s.index not in head_sections
        and _Cfg(source, s).integer("batch_normalize", 0)
    )
    return next((a for a, _ in acts.most_common() if a != "linear"), "silu")


class _BodyRows:
    """Our body rows, one per darknet section outside the head, and the weight keys of each.

    Attributes:
        rows: Our ``backbone`` rows so far.
        row_of: Darknet section index -> its row.
        key_map: ``module_list.{i}.<...>`` -> our state_dict key, for the sections translated so far.
    """

    def __init__(self, source: str, sections: list[DarknetSection], model_act: str) -> None:
        self.source = source
        self.sections = sections
        self.model_act = model_act
        self.rows: list[list[Any]] = []
        self.row_of: dict[int, int] = {}
        self.key_map: dict[str, str] = {}

    def src(self, cfg: _Cfg, section_index: int) -> int:
        """Our ``from`` for reading darknet section ``section_index`` (-1 = the image)."""
        if section_index < 0:
            return -1
        if section_index not in self.row_of:
            kind = self.sections[section_index].type
            raise cfg.fail(
                f"reads section {section_index} [{kind}], which has no feature map in the translated model "
                f"(implicit constants and detection-head layers can only be read by the head pattern)"
            )
        row = self.row_of[section_index]
        return -1 if row == len(self.rows) - 1 else row

    def absolute(self, cfg: _Cfg, section_index: int) -> int:
        """Our ``from`` for reading ``section_index`` in a multi-input row (see :func:`_absolute`)."""
        return _absolute(self.src(cfg, section_index), len(self.rows))

    def add(self, section: DarknetSection) -> None:
        """Append the row of ``section`` (which reads the section before it unless it says otherwise)."""
        cfg = _Cfg(self.source, section)
        self.rows.append(_SECTION_ROWS[section.type](self, cfg, section.index - 1))
        self.row_of[section.index] = len(self.rows) - 1

    def convolutional(self, cfg: _Cfg, previous: int) -> list[Any]:
        block, args, has_bn = _convolution(cfg, self.model_act)
        row = [self.src(cfg, previous), 1, block, args]
        i, prefix = cfg.section.index, f"body.layers.{len(self.rows)}"
        self.key_map[f"module_list.{i}.Conv2d.weight"] = f"{prefix}.conv.weight"
        if has_bn:
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                self.key_map[f"module_list.{i}.BatchNorm2d.{name}"] = f"{prefix}.bn.{name}"
        else:
            self.key_map[f"module_list.{i}.Conv2d.bias"] = f"{prefix}.conv.bias"
        return row

    def route(self, cfg: _Cfg, previous: int) -> list[Any]:
        if "groups" in cfg.section.options or "group_id" in cfg.section.options:
            raise cfg.fail("route with groups/group_id (channel split) is not supported")
        layers = [cfg.ref(v) for v in cfg.integers("layers")]
        return [[self.absolute(cfg, j) for j in layers], 1, "Concat", []]

    def shortcut(self, cfg: _Cfg, previous: int) -> list[Any]:
        if "weights_type" in cfg.section.options:
            raise cfg.fail("weighted shortcut (weights_type) is not supported")
        others = [cfg.ref(v) for v in cfg.integers("from")]
        return [[self.absolute(cfg, previous)] + [self.absolute(cfg, j) for j in others], 1, "Shortcut", []]

    def upsample(self, cfg: _Cfg, previous: int) -> list[Any]:
        return [self.src(cfg, previous), 1, "Upsample", [cfg.integer("stride", 2)]]

    def maxpool(self, cfg: _Cfg, previous: int) -> list[Any]:
        size, stride = cfg.integer("size", 2), cfg.integer("stride", 1)
        if size == 2 and stride == 1:
            raise cfg.fail("maxpool size=2 stride=1 (zero-padded, yolov3-tiny) is not supported")
        return [self.src(cfg, previous), 1, "MaxPool", [size, stride]]

    def reorg(self, cfg: _Cfg, previous: int) -> list[Any]:
        return [self.src(cfg, previous), 1, "ReOrg", []]

    def implicit_op(self, cfg: _Cfg, previous: int) -> list[Any]:
        """``shift_channels`` / ``control_channels`` outside the head: an implicit row reading the bank."""
        kind = cfg.section.type
        refs = [cfg.ref(v) for v in cfg.integers("from")]
        wanted = "implicit_add" if kind == "shift_channels" else "implicit_mul"
        if len(refs) != 1 or self.sections[refs[0]].type != wanted:
            raise cfg.fail(f"{kind} must read one [{wanted}] section, got from={refs}")
        block = "ImplicitAdd" if kind == "shift_channels" else "ImplicitMul"
        row = [self.src(cfg, previous), 1, block, [f"darknet.{refs[0]}"]]
        self.key_map[f"module_list.{refs[0]}.implicit"] = f"bank.darknet.{refs[0]}.implicit"
        return row


#: The row builder of each darknet section type that becomes a body row.
_SECTION_ROWS: dict[str, Callable[[_BodyRows, _Cfg, int], list[Any]]] = {
    "convolutional": _BodyRows.convolutional,
    "route": _BodyRows.route,
    "shortcut": _BodyRows.shortcut,
    "upsample": _BodyRows.upsample,
    "maxpool": _BodyRows.maxpool,
    "reorg": _BodyRows.reorg,
    "shift_channels": _BodyRows.implicit_op,
    "control_channels": _BodyRows.implicit_op,
}


def _translate_head(
    source: str, sections: list[DarknetSection], levels: list[_HeadLevel], body: _BodyRows
) -> tuple[list[int], bool, dict[str, str]]:
    """The body rows the head reads, whether it is implicit, and its bank aliases; adds the head's weight keys.

    Level ``l``'s 1×1 conv becomes ``heads.detect.m.{l}`` and its implicit sections ``detect.ia.{l}`` /
    ``detect.im.{l}``; a section that several levels use is an alias of the first level's name.
    """
    implicit = levels[0].shift is not None
    implicit_share: dict[str, str] = {}
    first_user: dict[int, str] = {}
    key_map = body.key_map
    outputs = []
    for level, head in enumerate(levels):
        cfg = _Cfg(source, sections[head.yolo])
        if (head.shift is not None) != implicit or (head.control is not None) != implicit:
            raise cfg.fail(
                "every yolo level needs the same head: shift_channels + 1×1 conv + control_channels on all "
                "levels (YOLOR) or on none (plain YOLO)"
            )
        outputs.append(body.row_of.get(head.feature, None))
        if outputs[-1] is None:
            raise cfg.fail(f"the head reads section {head.feature}, which has no feature map")
        key_map[f"module_list.{head.conv}.Conv2d.weight"] = f"heads.detect.m.{level}.weight"
        key_map[f"module_list.{head.conv}.Conv2d.bias"] = f"heads.detect.m.{level}.bias"
        for section_index, kind in ((head.shift, "ia"), (head.control, "im")):
            if section_index is None:
                continue
            name = f"detect.{kind}.{level}"
            if section_index in first_user:
                implicit_share[name] = first_user[section_index]
                continue
            first_user[section_index] = name
            key = f"module_list.{section_index}.implicit"
            if key in key_map:
                raise cfg.fail(f"implicit section {section_index} is used both in the body and by the head")
            key_map[key] = f"bank.{name}.implicit"
    return outputs, implicit, implicit_share


def _head_geometry(source: str, levels: list[_HeadLevel]) -> tuple[int, list[list[float | int]]]:
    """``nc`` and ``anchors`` of our config: the ``yolo`` sections must agree on the class and anchor counts."""
    classes = {head.classes for head in levels}
    if len(classes) != 1:
        raise InteropError(f"{source}: the yolo sections disagree on 'classes': {sorted(classes)}")
    anchors_per_level = {len(head.anchors) for head in levels}
    if len(anchors_per_level) != 1:
        raise InteropError(f"{source}: every yolo section needs the same number of anchors (mask entries)")
    return classes.pop(), [[_number(v) for v in head.anchors] for head in levels]


def _absolute(src: int, current: int) -> int:
    """Our ``from`` of a multi-input row as an absolute index (or -1 for the previous row)."""
    return src if src >= 0 else current - 1


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _activation(cfg: _Cfg) -> str:
    name = cfg.text("activation", "linear")
    act = DARKNET_ACTIVATIONS.get(name)
    if act is None:
        raise cfg.fail(
            f"activation '{name}' is not supported (the official PyTorch code applies {', '.join(DARKNET_ACTIVATIONS)})"
        )
    return act


def _convolution(cfg: _Cfg, model_act: str) -> tuple[str, list[Any], bool]:
    options = cfg.section.options
    if "stride_x" in options or "stride_y" in options or "," in options.get("size", ""):
        raise cfg.fail(
            "convolutions with separate x/y strides or several kernel sizes (MixConv) are not supported"
        )
    if "dilation" in options and cfg.integer("dilation") != 1:
        raise cfg.fail("dilated convolutions are not supported")
    filters, size, stride = cfg.integer("filters"), cfg.integer("size", 1), cfg.integer("stride", 1)
    groups = cfg.integer("groups", 1)
    if size % 2 == 0:
        raise cfg.fail(f"even kernel size {size} is not supported")
    if size > 1 and not cfg.integer("pad", 0):
        raise cfg.fail("convolutions without 'same' padding (pad=0) are not supported")
    act = _activation(cfg)
    if cfg.integer("batch_normalize", 0):
        args: list[Any] = [filters, size, stride]
        if act != model_act or groups != 1:
            args += [groups, False if act == "linear" else (True if act == model_act else act)]
        return "Conv", args, True
    if act != "linear":
        raise cfg.fail(f"a convolution without batch_normalize must be linear, got activation '{act}'")
    return "PlainConv", [filters, size, stride, groups], False


def _find_heads(source: str, sections: list[DarknetSection]) -> tuple[list[_HeadLevel], set[int]]:
    """Each yolo section with its head layers; the set of sections the head consumes."""
    levels: list[_HeadLevel] = []
    consumed: set[int] = set()
    for section in sections:
        if section.type != "yolo":
            continue
        cfg = _Cfg(source, section)
        if "from" in section.options:
            raise cfg.fail("yolo layers with 'from=' are not supported")
        j = section.index - 1
        control = shift = None
        group = [section.index]
        if j >= 0 and sections[j].type == "control_channels":
            control = _implicit_ref(source, sections, sections[j], "implicit_mul")
            group.append(j)
            j -= 1
        conv = sections[j] if j >= 0 else None
        if conv is None or conv.type != "convolutional":
            raise cfg.fail(
                "expected a linear 1×1 [convolutional] (optionally followed by [control_channels]) before [yolo]"
            )
        conv_cfg = _Cfg(source, conv)
        if (
            conv_cfg.integer("batch_normalize", 0)
            or conv_cfg.integer("size", 1) != 1
            or conv_cfg.integer("stride", 1) != 1
            or conv_cfg.integer("groups", 1) != 1
            or conv_cfg.text("activation", "linear") != "linear"
        ):
            raise conv_cfg.fail("the convolution before [yolo] must be 1×1, stride 1, linear, without BN")
        group.append(j)
        j -= 1
        if j >= 0 and sections[j].type == "shift_channels":
            shift = _implicit_ref(source, sections, sections[j], "implicit_add")
            group.append(j)
            j -= 1
        if j < 0:
            raise cfg.fail("the detection head has no input layer")
        mask = cfg.integers("mask")
        anchors = cfg.numbers("anchors")
        pairs = [anchors[k : k + 2] for k in range(0, len(anchors) - 1, 2)]
        if len(anchors) % 2 or any(not 0 <= m < len(pairs) for m in mask):
            raise cfg.fail(f"mask {mask} does not index the {len(pairs)} anchor pairs")
        classes = cfg.integer("classes")
        if conv_cfg.integer("filters") != len(mask) * (classes + 5):
            raise conv_cfg.fail(
                f"filters={conv_cfg.integer('filters')} but the yolo layer needs {len(mask)} × ({classes} + 5)"
            )
        levels.append(
            _HeadLevel(
                j, conv.index, shift, control, [v for m in mask for v in pairs[m]], classes, section.index
            )
        )
        consumed.update(group)
    if not levels:
        raise InteropError(f"{source}: no [yolo] section: nothing to detect with")
    readers = _references(source, sections)
    for index in sorted(consumed):
        outside = [r for r in readers.get(index, []) if r not in consumed]
        if outside:
            s = sections[index]
            raise _Cfg(source, sections[outside[0]]).fail(
                f"reads section {index} [{s.type}], a detection-head layer; only the head may use it"
            )
    return levels, consumed


def _implicit_ref(source: str, sections: list[DarknetSection], section: DarknetSection, wanted: str) -> int:
    cfg = _Cfg(source, section)
    refs = [cfg.ref(v) for v in cfg.integers("from")]
    if len(refs) != 1 or sections[refs[0]].type != wanted:
        raise cfg.fail(f"[{section.type}] must read one [{wanted}] section, got from={refs}")
    return refs[0]


def _references(source: str, sections: list[DarknetSection]) -> dict[int, list[int]]:
    """Section index -> sections that read it through route/shortcut/from (not the implicit sequence)."""
    readers: dict[int, list[int]] = {}
    for section in sections:
        cfg = _Cfg(source, section)
        key = {"route": "layers", "shortcut": "from"}.get(section.type)
        if key is None:
            continue
        for value in cfg.integers(key):
            readers.setdefault(cfg.ref(value), []).append(section.index)
    for section in sections:
        # Sequential readers: a layer reads the one before it unless it is a route or an implicit constant.
        if section.index > 0 and section.type not in ("route", "implicit_add", "implicit_mul"):
            readers.setdefault(section.index - 1, []).append(section.index)
    return readers


def darknet_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The ``module_list.*`` tensors of a ``main`` checkpoint (its ``model`` entry, or the dict itself)."""
    from unified.interop.unpickler import OfficialObject, module_state_dict

    model = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    if isinstance(model, OfficialObject):
        model = module_state_dict(model)
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise InteropError("the checkpoint's 'model' entry is not a state_dict of tensors")
    # Checkpoints saved from a DataParallel wrapper prefix every key with "module.".
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in model.items()}


def convert_darknet(
    checkpoint: Any, cfg_path: str | Path, class_names: list[str] | None = None
) -> ConvertedModel:
    """Translate a ``main`` checkpoint with its darknet cfg into our config and weights.

    Raises:
        InteropError: naming the cfg section of an unsupported layer, or every official tensor that finds no
            place (and every one of ours left empty) with the layers involved.
    """
    from unified.model import build_model
    from unified.task import DatasetInfo

    translation = translate_darknet(cfg_path)
    official = darknet_state_dict(checkpoint)
    nc = translation.model_config["nc"]
    notes = []
    if class_names is None or len(class_names) != nc:
        if class_names is not None:
            notes.append(f"{len(class_names)} class names given for {nc} classes: using numbered classes")
        class_names = numbered_names(nc)
    ours = build_model(
        translation.model_config,
        info=DatasetInfo(class_names=list(class_names)),
        implicit_share=translation.implicit_share,
    )
    strides = [s.stride for s in ours.body.out_shapes]
    if strides != [8 * 2**level for level in range(len(strides))]:
        notes.append(f"head strides {strides} differ from the official 8, 16, 32, ... by yolo order")
    state = map_state_dict(
        official,
        translation.key_map,
        ours.state_dict(),
        translation.describe_official,
        translation.describe_own,
    )
    params = sum(
        v.numel()
        for k, v in official.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    return ConvertedModel(
        model_config=translation.model_config,
        state_dict=state,
        class_names=list(class_names),
        implicit_share=translation.implicit_share,
        branch="main",
        notes=notes,
        official_params=params,
    )


__all__ = [
    "DARKNET_ACTIVATIONS",
    "DARKNET_NORM",
    "SUPPORTED_SECTIONS",
    "DarknetSection",
    "DarknetTranslation",
    "convert_darknet",
    "darknet_state_dict",
    "parse_darknet_cfg",
    "translate_darknet",
]
