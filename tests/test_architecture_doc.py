"""docs/ARCHITECTURE.md is the contract: every path, module and name it mentions in code spans exists."""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import pkgutil
import re

import pytest

from tests.conftest import REPO

DOC = REPO / "docs" / "ARCHITECTURE.md"
SPANS = re.findall(r"`([^`\n]+)`", DOC.read_text())
PATH = re.compile(r"^(unified|tasks|tools|tests|configs|docs)/[\w/.-]*$")
DOTTED = re.compile(r"^unified(\.\w+)+$")
#: A class, registry or function of ours, optionally with one attribute: ``LabelKind``, ``DetectTask.step``.
NAME = re.compile(r"^([A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*|[A-Z][A-Z_]{3,}|[a-z]+_[a-z_]+)(\.\w+)?(\(.*\))?$")
#: Lower-case spans that are not names of ours (YAML keys, values, batch keys, torch names).
NOT_OURS = {"label_kinds", "image_labels", "label_mask", "orig_shape", "image_id", "implicit_share",
            "depth_multiple", "width_multiple", "implicit_form", "skip_invalid", "num_identities",
            "class_names", "image_label_names", "state_key", "planned_epochs", "coco_field", "derived_from",
            "per_instance", "target_index", "averaged_model", "config_class", "shift_channels",
            "iou_type", "ia_0", "before_train", "before_epoch", "before_step", "after_backward",
            "after_step", "after_epoch", "after_train", "state_dict", "load_state_dict", "eval_model",
            "make_evaluator", "build_head", "save_plots", "to_sample", "to_device", "from_coco_annotation",
            "from_coco_image", "memory_format", "out_shapes", "fuse_model", "category_id"}  # fmt: skip


def _index() -> dict[str, list[object]]:
    """Every public name of every module of ``unified`` (built-in tasks included: ``unified.tasks``), with the
    objects bearing it."""
    import unified

    names: dict[str, list[object]] = {}
    for package in (unified,):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            names.setdefault(info.name.rpartition(".")[2], []).append(module)
            for name, value in vars(module).items():
                if not name.startswith("_"):
                    names.setdefault(name, []).append(value)
    # Names registered in our registries (formats, kinds, tasks, balancers...) are ours too, including
    # those of the example plugin the doc describes.
    from unified.registry import Registry

    importlib.import_module("tests.plugins.landmark_task")

    for registry in [v for values in list(names.values()) for v in values if isinstance(v, Registry)]:
        for name in registry.names():
            names.setdefault(name, []).append(registry.get(name))
    return names


def _has(owner: object, attribute: str) -> bool:
    if hasattr(owner, attribute):
        return True
    return dataclasses.is_dataclass(owner) and attribute in {f.name for f in dataclasses.fields(owner)}


def test_every_path_the_doc_names_exists():
    missing = [span for span in SPANS if PATH.match(span) and not (REPO / span.rstrip("/")).exists()]
    assert not missing, f"docs/ARCHITECTURE.md names paths that do not exist: {missing}"


def test_every_module_the_doc_names_imports():
    bad = []
    for span in filter(DOTTED.match, SPANS):
        module, _, attribute = span.rpartition(".")
        try:
            importlib.import_module(span)
        except ImportError:
            try:
                if not hasattr(importlib.import_module(module), attribute):
                    bad.append(span)
            except ImportError:
                bad.append(span)
    assert not bad, f"docs/ARCHITECTURE.md names modules or attributes that do not import: {bad}"


def test_every_class_registry_and_attribute_the_doc_names_exists():
    index = _index()
    bad = []
    for span in SPANS:
        match = NAME.match(span)
        if not match or span in NOT_OURS or match.group(1) in NOT_OURS:
            continue
        owners = index.get(match.group(1)) or (
            [getattr(builtins, match.group(1))] if hasattr(builtins, match.group(1)) else None
        )
        if not owners:
            bad.append(span)
            continue
        attribute = (match.group(2) or "").lstrip(".")
        if attribute and not any(_has(owner, attribute) for owner in owners):
            bad.append(span)
    assert not bad, f"docs/ARCHITECTURE.md names things nothing defines: {bad}"


@pytest.mark.parametrize("name", ["LabelKind", "LABEL_KINDS", "FORMATS", "EMAHook", "StepContext"])
def test_the_checker_knows_the_new_contract(name):
    assert name in _index()
