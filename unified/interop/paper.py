"""The official ``paper`` branch: a pickled ``models.yolo.Model`` with its YAML in ``model.yaml``.

Translation, row by row (official row ``i`` is our body row ``i``; the last row, ``IDetect`` or ``Detect``,
is our detection head):

========================  =============================================================================
official module / args    ours
========================  =============================================================================
``Conv [c2, k, s, p, g]``  ``Conv [c2, k, s, g]`` (``p`` must be the default 'same' padding)
``Bottleneck``,           same name and args (``[c2, shortcut, g, e]``); CSP blocks take the repeat count
``BottleneckCSP(F)``      inside, as in the official code
``BottleneckCSP2``        ``[c2, shortcut, g]`` (the official block ignores ``e``)
``SPPCSP``                ``[c2, e, k]`` from the official ``[c2, shortcut, g, e, k]`` (repeats: 1)
``DownC [c2, k]``          ``DownC [c2, k]`` (repeats: 1; the official block ignores its ``n``)
``ReOrg``, ``Concat``     same
``nn.Upsample``           ``Upsample [scale, mode]`` (``size`` must be ``None``)
``nn.MaxPool2d [k, s, p]``  ``MaxPool [k, s, p]``
========================  =============================================================================

Weights: ``model.{i}.<rest>`` -> ``body.layers.{i}.<rest>`` (our paper blocks keep the official submodule
names); head ``model.{last}.m.{l}.*`` -> ``heads.detect.m.{l}.*``, ``model.{last}.ia.{l}.implicit`` /
``im.{l}.implicit`` -> ``bank.detect.ia.{l}.implicit`` / ``bank.detect.im.{l}.implicit``. The head's
``anchors`` / ``anchor_grid`` buffers are not weights of ours: the anchors in pixels are read from
``anchor_grid`` (they may differ from the YAML's after the official auto-anchor) and checked against
``anchors × stride``. BatchNorm eps and momentum and the activation are read from the pickled modules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from unified.interop.common import ConvertedModel, InteropError, map_state_dict, numbered_names
from unified.interop.unpickler import OfficialObject, iter_modules, module_state_dict
from unified.models.blocks import make_divisible

#: Official activation classes (by class name) and our activation names.
ACTIVATION_NAMES = {
    "SiLU": "silu",
    "Swish": "silu",
    "MemoryEfficientSwish": "silu",
    "Hardswish": "hardswish",
    "LeakyReLU": "leaky",
    "ReLU": "relu",
    "Mish": "mish",
    "MemoryEfficientMish": "mish",
    "MishCuda": "mish",
    "Identity": "linear",
}

_HEADS = ("IDetect", "Detect")
#: Official blocks whose first argument is an output channel count scaled by the width multiple.
_CHANNEL_BLOCKS = (
    "Conv",
    "Bottleneck",
    "BottleneckCSP",
    "BottleneckCSPF",
    "BottleneckCSP2",
    "SPPCSP",
    "DownC",
)


def _literal(value: Any, nc: int, anchors: Any) -> Any:
    """The official parser ``eval``s string args; only these few literals ever occur in the YAMLs."""
    if not isinstance(value, str):
        return value
    known = {"None": None, "True": True, "False": False, "nc": nc, "anchors": anchors}
    return known.get(value, value)


def _conv(args: list[Any], where: str) -> tuple[str, list[Any], bool]:
    c2, k, s, p, g, act = (args + [None] * 6)[:6]
    k = 1 if k is None else k
    if p is not None and p != k // 2:
        raise InteropError(f"{where}: Conv with explicit padding {p} (kernel {k}) is not supported")
    out: list[Any] = [c2, k, 1 if s is None else s]
    if (g is not None and g != 1) or act is not None:
        out += [1 if g is None else g, True if act is None else act]
    return "Conv", out, False


def _same(name: str) -> Callable[[list[Any], str], tuple[str, list[Any], bool]]:
    def translate(args: list[Any], where: str) -> tuple[str, list[Any], bool]:
        return name, list(args), False

    return translate


def _csp2(args: list[Any], where: str) -> tuple[str, list[Any], bool]:
    return "BottleneckCSP2", list(args[:3]), False


def _sppcsp(args: list[Any], where: str) -> tuple[str, list[Any], bool]:
    c2, _shortcut, _g, e, k = (args + [None] * 5)[:5]
    out: list[Any] = [c2]
    if e is not None or k is not None:
        out.append(0.5 if e is None else e)
    if k is not None:
        out.append(list(k))
    return "SPPCSP", out, True


def _downc(args: list[Any], where: str) -> tuple[str, list[Any], bool]:
    return "DownC", list(args[:2]), True


def _upsample(args: list[Any], where: str) -> tuple[str, list[Any], bool]:
    size, scale, mode = (args + [None] * 3)[:3]
    if size is not None or scale is None or float(scale) != int(scale):
        raise InteropError(f"{where}: nn.Upsample needs size None and an integer scale, got {args!r}")
    return "Upsample", [int(scale), mode or "nearest"], False


def _maxpool(args: list[Any], where: str) -> tuple[str, list[Any], bool]:
    k, s, p = (args + [None] * 3)[:3]
    return "MaxPool", [k, k if s is None else s, 0 if p is None else p], False


#: Official module name -> translation of its args: (our block, our args, force repeats to 1).
PAPER_BLOCKS: dict[str, Callable[[list[Any], str], tuple[str, list[Any], bool]]] = {
    "Conv": _conv,
    "Bottleneck": _same("Bottleneck"),
    "BottleneckCSP": _same("BottleneckCSP"),
    "BottleneckCSPF": _same("BottleneckCSPF"),
    "BottleneckCSP2": _csp2,
    "SPPCSP": _sppcsp,
    "DownC": _downc,
    "ReOrg": _same("ReOrg"),
    "Concat": _same("Concat"),
    "Upsample": _upsample,
    "MaxPool2d": _maxpool,
}


def translate_paper_yaml(
    yaml_dict: dict[str, Any], anchors_px: list[list[float]] | None = None, nc: int | None = None
) -> dict[str, Any]:
    """Our model config (as a dict) for an official ``paper`` model YAML.

    Args:
        yaml_dict: The official model YAML (``nc``, ``depth_multiple``, ``width_multiple``, ``anchors``,
            ``backbone``, ``head``).
        anchors_px: Anchors in pixels, one list per level, overriding the YAML's (from the checkpoint).
        nc: Class count overriding the YAML's.

    Raises:
        InteropError: naming the official row of an unsupported module or malformed row.
    """
    for key in ("backbone", "head"):
        if not isinstance(yaml_dict.get(key), list):
            raise InteropError(f"official model YAML: '{key}' must be a list of rows")
    nc = int(nc if nc is not None else yaml_dict.get("nc", 80))
    gd = float(yaml_dict.get("depth_multiple", 1.0))
    gw = float(yaml_dict.get("width_multiple", 1.0))
    raw_anchors = yaml_dict.get("anchors")
    rows_in = list(yaml_dict["backbone"]) + list(yaml_dict["head"])
    n_backbone = len(yaml_dict["backbone"])
    rows: list[list[Any]] = []
    head_row: list[Any] | None = None
    for i, row in enumerate(rows_in):
        part = "backbone" if i < n_backbone else "head"
        where = f"official model YAML row {i} ({part}.{i if i < n_backbone else i - n_backbone}: {row!r})"
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            raise InteropError(f"{where}: a row is [from, number, module, args]")
        src, n, module, args = row
        module = str(module)
        short = module[3:] if module.startswith("nn.") else module
        args = [_literal(a, nc, raw_anchors) for a in (args or [])]
        if short in _HEADS:
            if i != len(rows_in) - 1:
                raise InteropError(f"{where}: the detection head must be the last row")
            head_row = [src, short, args]
            continue
        translate = PAPER_BLOCKS.get(short)
        if translate is None:
            raise InteropError(
                f"{where}: module {module!r} has no counterpart in unified "
                f"(supported: {', '.join(sorted(PAPER_BLOCKS))}, IDetect, Detect)"
            )
        block, our_args, single = translate(args, where)
        if short in _CHANNEL_BLOCKS and our_args and gw == 1.0 and isinstance(our_args[0], int):
            # The official parser rounds every channel count up to a multiple of 8, even at width 1.
            our_args[0] = make_divisible(our_args[0], 8)
        rows.append([src, 1 if single else int(n), block, our_args])
    if head_row is None:
        raise InteropError("official model YAML: the last row must be the IDetect/Detect head")
    src, head_name, _ = head_row
    last = len(rows_in) - 1
    froms = src if isinstance(src, list) else [src]
    outputs = [int(f) if f >= 0 else last + int(f) for f in froms]
    if anchors_px is None:
        if not isinstance(raw_anchors, list):
            raise InteropError(
                "official model YAML: anchors are a count (auto-anchor); the checkpoint's anchor_grid is needed"
            )
        anchors_px = [[float(v) for v in level] for level in raw_anchors]
    return {
        "description": str(
            yaml_dict.get("description", "converted from an official YOLOR paper-branch model")
        ),
        "nc": nc,
        "depth_multiple": gd,
        "width_multiple": gw,
        "anchors": [[_number(v) for v in level] for level in anchors_px],
        "backbone": rows[:n_backbone],
        "neck": rows[n_backbone:],
        "outputs": outputs,
        "head": {"implicit": head_name == "IDetect"},
    }


def _number(value: float) -> float | int:
    value = float(value)
    return int(value) if value.is_integer() else round(value, 6)


def _norm_and_activation(model: OfficialObject) -> tuple[dict[str, float], str]:
    norms: set[tuple[float, float]] = set()
    acts: set[str] = set()
    for name, module in iter_modules(model):
        buffers = module.get("_buffers") or {}
        if "running_mean" in buffers and module.get("eps") is not None:
            norms.add((float(module.get("eps")), float(module.get("momentum") or 0.03)))
        if name.rsplit(".", 1)[-1] == "act":
            cls = module.class_name
            act = ACTIVATION_NAMES.get(cls)
            if act is None:
                raise InteropError(
                    f"official module {name!r}: activation {cls} has no counterpart in unified"
                )
            if act == "leaky" and abs(float(module.get("negative_slope", 0.1)) - 0.1) > 1e-9:
                raise InteropError(f"official module {name!r}: LeakyReLU slope must be 0.1 (darknet 'leaky')")
            acts.add(act)
    if len(norms) > 1:
        raise InteropError(f"the official model mixes BatchNorm settings {sorted(norms)}; unified uses one")
    if len(acts) > 1:
        raise InteropError(f"the official model mixes activations {sorted(acts)}; unified uses one per model")
    eps, momentum = norms.pop() if norms else (1e-3, 0.03)
    return {"eps": eps, "momentum": momentum}, acts.pop() if acts else "silu"


def _head_anchors(
    official: dict[str, torch.Tensor], last: int, stride: Any, source: str
) -> tuple[list[list[float]] | None, dict[str, str]]:
    grid = official.get(f"model.{last}.anchor_grid")
    checked: dict[str, str] = {}
    if grid is None:
        return None, checked
    grid = grid.float()
    levels = grid.shape[0]
    anchors_px = grid.reshape(levels, -1).tolist()
    checked[f"model.{last}.anchor_grid"] = "anchors in pixels (read into the model config)"
    scaled = official.get(f"model.{last}.anchors")
    if scaled is not None:
        checked[f"model.{last}.anchors"] = "anchors in grid units (checked against anchor_grid / stride)"
        if isinstance(stride, torch.Tensor) and stride.numel() == levels:
            expected = grid.reshape(levels, -1, 2) / stride.float().view(-1, 1, 1)
            if not torch.allclose(scaled.float().reshape(levels, -1, 2), expected, rtol=1e-2, atol=1e-2):
                raise InteropError(
                    f"{source}: head anchors (grid units) disagree with anchor_grid / stride; the checkpoint "
                    f"is inconsistent"
                )
    return anchors_px, checked


def convert_paper(model: OfficialObject, source: str) -> ConvertedModel:
    """Translate a pickled official ``paper`` ``Model`` (a stand-in) into our config and weights.

    Raises:
        InteropError: if the YAML uses an unsupported module, the weights do not fit the translated model
            (names every unused or missing tensor), or anchors are inconsistent.
    """
    from unified.model import build_model
    from unified.task import DatasetInfo

    yaml_dict = model.get("yaml")
    if not isinstance(yaml_dict, dict):
        raise InteropError(f"{source}: the pickled model has no 'yaml' model definition")
    official = module_state_dict(model)
    params = module_state_dict(model, buffers=False)
    last = len(yaml_dict.get("backbone", [])) + len(yaml_dict.get("head", [])) - 1
    stride = model.get("stride")
    anchors_px, checked = _head_anchors(official, last, stride, source)
    nc_attr = model.get("nc")
    nc = int(nc_attr) if isinstance(nc_attr, int) else None
    config = translate_paper_yaml(yaml_dict, anchors_px, nc)
    config["norm"], config["activation"] = _norm_and_activation(model)
    notes = []
    if anchors_px is not None and isinstance(yaml_dict.get("anchors"), list):
        yaml_px = [[float(v) for v in level] for level in yaml_dict["anchors"]]
        if yaml_px != [[float(v) for v in level] for level in anchors_px]:
            notes.append("anchors taken from the checkpoint's anchor_grid (they differ from the YAML's)")
    names = model.get("names")
    nc = config["nc"]
    if isinstance(names, (list, tuple)) and len(names) == nc and all(isinstance(n, str) for n in names):
        class_names = list(names)
    else:
        class_names = numbered_names(nc)
        notes.append("the checkpoint carries no class names; classes are numbered")
    ours = build_model(config, info=DatasetInfo(class_names=class_names))
    if isinstance(stride, torch.Tensor):
        got = [float(s.stride) for s in ours.body.out_shapes]
        if got != [float(s) for s in stride.tolist()]:
            raise InteropError(
                f"{source}: official strides {stride.tolist()} but the translated model has {got}"
            )
    mapping = {key: _paper_key(key, last) for key in official}
    rows = {i: str(r[2]) for i, r in enumerate(config["backbone"] + config["neck"])}
    state = map_state_dict(
        official,
        {k: v for k, v in mapping.items() if v is not None},
        ours.state_dict(),
        lambda key: _describe_official(key, yaml_dict, last),
        lambda key: _describe_own(key, rows),
        checked,
    )
    return ConvertedModel(
        model_config=config,
        state_dict=state,
        class_names=class_names,
        branch="paper",
        notes=notes,
        official_params=sum(t.numel() for t in params.values()),
    )


def _paper_key(key: str, last: int) -> str | None:
    parts = key.split(".")
    if len(parts) < 3 or parts[0] != "model" or not parts[1].isdigit():
        return None
    index, rest = int(parts[1]), parts[2:]
    if index != last:
        return ".".join(["body", "layers", str(index), *rest])
    if rest[0] == "m":
        return ".".join(["heads", "detect", *rest])
    if rest[0] in ("ia", "im") and len(rest) == 3:
        return f"bank.detect.{rest[0]}.{rest[1]}.{rest[2]}"
    return None


def _describe_official(key: str, yaml_dict: dict[str, Any], last: int) -> str:
    parts = key.split(".")
    if len(parts) > 1 and parts[1].isdigit():
        rows = list(yaml_dict.get("backbone", [])) + list(yaml_dict.get("head", []))
        index = int(parts[1])
        if index < len(rows):
            return f"official row {index}, {rows[index][2]}"
    return "official model"


def _describe_own(key: str, rows: dict[int, str]) -> str:
    parts = key.split(".")
    if parts[0] == "body" and len(parts) > 2 and parts[2].isdigit():
        return f"body row {parts[2]}, {rows.get(int(parts[2]), '?')}"
    if parts[0] == "heads":
        return "detection head"
    return "implicit bank"


__all__ = ["ACTIVATION_NAMES", "PAPER_BLOCKS", "convert_paper", "translate_paper_yaml"]
