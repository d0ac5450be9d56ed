"""The reference of every experiment config key, generated from the dataclasses into ``docs/CONFIG.md``.

The keys, types and defaults come from the dataclasses themselves (``ExperimentConfig`` and the configs it
nests, each registered task's ``config_class`` under ``task_options.<task>``, each registered balancer's
``options_class`` under ``balancer.options``); a key's meaning comes from its class's docstring
(``Attributes:``), else from the comment on or just above its field, so the page says what the code says.
``tests/test_config_reference.py`` fails when the page is out of date. Regenerate it with::

    python -m unified.config_reference docs/CONFIG.md
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The command that rewrites the page; the test's failure message repeats it.
REGENERATE = "python -m unified.config_reference docs/CONFIG.md"

_HEADER = f"""# Experiment config reference

Every key of an experiment YAML (`configs/experiments/*.yaml`, `--config`), with its default and meaning.
Set one from the command line as an override: `key.sub=value` (e.g. `train.epochs=30`,
`task_options.detect.conf_thres=0.01`, `balancer.options.temperature=1.5`). An unknown key is an error
naming the closest valid one.

Generated from the dataclasses by `unified/config_reference.py`; do not edit by hand. Regenerate with
`{REGENERATE}`.
"""


#: Meanings of the keys whose field has neither an ``Attributes:`` line nor a comment. The code's own text
#: wins where there is one; ``tests/test_config_reference.py`` checks that every key here still exists.
NOTES: dict[str, str] = {
    "data": 'The dataset YAML (see the README\'s "Train on your own data") or an official YOLO data file.',
    "tasks": "Enabled tasks, registered names (`detect`, `jdc`, `jde`, `segment`, `pose`, a plugin's); a task "
    "that builds on `detect` enables it.",
    "task_options": "Per task, its options: the sections below.",
    "plugins": "Modules to import before the tasks are looked up: they register tasks, kinds of label, "
    "dataset formats or balancers.",
    "implicit_share": "`{consumer: shared}`: the implicit tensor `consumer` reads the tensor `shared` "
    "(darknet's `shift_channels from=N`).",
    "implicit": "How the heads' (and feature-alignment sites') implicit knowledge is shared: see "
    "`unified/implicit.py`. A checkpoint records it, so `load` rebuilds the same model.",
    "balancer.name": "The registered balancer that combines the task losses (`fixed`, `uncertainty`, `dwa`, "
    "`gradnorm`, `pcgrad`, `rlw`).",
    "balancer.weights": "Starting weight per task name (1 where not given).",
    "balancer.options": "The balancer's options: see the last section.",
    "optim.optimizer": "SGD with Nesterov momentum, Adam or AdamW.",
    "optim.lr0": "Initial (peak) learning rate.",
    "optim.lrf": "Final learning rate as a fraction of `lr0`.",
    "optim.momentum": "SGD momentum / Adam beta1.",
    "optim.weight_decay": "Weight decay of the convolution and linear weights (not of biases, norms or "
    "implicit tensors), scaled with the batch as in YOLOR.",
    "optim.warmup_epochs": "Epochs of learning-rate, momentum and accumulation warm-up.",
    "optim.warmup_momentum": "Momentum at the start of the warm-up.",
    "optim.warmup_bias_lr": "Learning rate of the biases at the start of the warm-up.",
    "optim.schedule": "Decay of the learning rate after the warm-up, from `lr0` to `lrf * lr0`.",
    "optim.nominal_batch_size": "Gradients accumulate to this many images per optimiser step.",
    "optim.ema": "Keep a moving average of the weights, used for evaluation and `best.pt`.",
    "optim.ema_decay": "Decay of the moving average once ramped up.",
    "optim.ema_ramp": "Optimiser steps over which the decay ramps up (`decay · (1 - exp(-updates / ramp))`).",
    "train": "The run: length, batch, image size, device, precision, starting weights.",
    "train.epochs": "Epochs to train (a time budget may shorten the schedule).",
    "train.batch_size": "Images per step, over all ranks.",
    "train.img_size": "Training and validation image size (letterboxed square), a multiple of 32.",
    "train.workers": "Data loader worker processes per rank.",
    "train.seed": "Seed of the weights' initialisation, sampling and augmentation.",
    "train.deterministic": "Deterministic algorithms only (a resumed CPU fp32 run ends bitwise equal).",
    "train.device": "`cpu`, a GPU index (`0`), a list (`0,1`), `cuda`, `cuda:N`, or empty: CUDA when present.",
    "train.precision": "`auto`: AMP fp16 on CUDA; on a CPU bf16 where a short measured probe (cached per machine) finds it at least 1.15x faster than fp32, else fp32.",
    "train.sync_bn": "Synchronised batch norm across DDP ranks (CUDA only).",
    "train.max_nonfinite_steps": "Consecutive steps with a NaN/Inf loss or gradient (skipped) before the run "
    "stops.",
    "train.skip_invalid": "Skip and count broken annotations and images instead of stopping before training.",
    "train.weights": "Starting weights: a unified checkpoint (ours, or a converted official one).",
    "project": "Folder of the run folders.",
    "name": "Run folder name inside `project` (`exp`, `exp2`, ... when taken).",
    "exist_ok": "Reuse `project/name` when it exists instead of taking the next free name.",
    "task_options.detect.conf_thres": "Least score a detection keeps in post-processing (low for "
    "validation, so that AP sees the whole precision-recall curve).",
    "task_options.detect.iou_thres": "IoU of the non-maximum suppression.",
    "task_options.detect.max_det": "Most detections kept per image.",
    "task_options.detect.multi_label": "A box may be kept once per class whose score passes `conf_thres`.",
    "task_options.jdc.gain": "Gain of the image-label BCE loss.",
    "task_options.jdc.threshold": "Score from which an image label counts as predicted (F1).",
    "task_options.jdc.implicit_form": "Form of the head's implicit tensors (`vector`, `nn`, `mf`); empty: the "
    "model YAML's `head.implicit_form`.",
    "task_options.jde.embedding_dim": "Length of the identity embedding.",
    "task_options.jde.gain": "Gain of the identity cross-entropy loss.",
    "task_options.jde.implicit_form": "Form of the head's implicit tensors (`vector`, `nn`, `mf`); empty: the "
    "model YAML's `head.implicit_form`.",
    "task_options.jde.match_iou": "Least IoU for a detection to take a labelled identity in the TPR@FAR "
    "evaluation.",
    "task_options.jde.track_conf": "Least score of the detections whose embeddings the TPR@FAR evaluation "
    "uses.",
}


@dataclasses.dataclass(frozen=True)
class ConfigKey:
    """One documented key: its dotted path, type, default and meaning."""

    key: str
    type: str
    default: str
    meaning: str


def _attribute_docs(cls: type) -> dict[str, str]:
    """``name -> text`` from the ``Attributes:`` sections of the docstrings of ``cls`` and its bases."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.getdoc(klass) if "__doc__" in vars(klass) else None
        if not doc or "Attributes:" not in doc:
            continue
        section = doc.split("Attributes:", 1)[1]
        current = None
        for line in section.splitlines()[1:]:
            if not line.strip():
                if current is not None:
                    break
                continue
            if not line.startswith(" "):
                break
            match = re.match(r"\s{2,}(\w+)(?: \([^)]*\))?:\s*(.*)", line)
            if match and len(line) - len(line.lstrip()) <= 4:
                current = match.group(1)
                found[current] = match.group(2).strip()
            elif current is not None:
                found[current] = f"{found[current]} {line.strip()}"
    return found


def _comment_docs(cls: type) -> dict[str, str]:
    """``name -> text`` from the comments on a field's lines, else on the comment lines just above it."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass.__module__ == "builtins":
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        comments: dict[int, str] = {}
        code_lines: set[int] = set()
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                comments[token.start[0]] = token.string.lstrip("#").strip()
            elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                code_lines.add(token.start[0])
        body = ast.parse(source).body[0]
        assert isinstance(body, ast.ClassDef)
        for node in body.body:
            if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
                continue
            own = [
                comments[n] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1) if n in comments
            ]
            above: list[str] = []
            line = node.lineno - 1
            while line in comments and line not in code_lines:
                above.insert(0, comments[line])
                line -= 1
            text = " ".join(own or above)
            if text:
                found[node.target.id] = text
    return found


def _default(item: dataclasses.Field[Any]) -> str:
    if item.default is not dataclasses.MISSING:
        value = item.default
    elif item.default_factory is not dataclasses.MISSING:
        value = item.default_factory()
        if dataclasses.is_dataclass(value):
            return "(section)"
    else:
        return "(required)"
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" else f"`{value}`"
    return f"`{json.dumps(value)}`"


def _nested_dataclass(hint: Any) -> type | None:
    """The dataclass a field holds (also through ``X | None``), else None."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None


def _markdown(text: str) -> str:
    """Docstring text for a table cell: RST literals as Markdown code, pipes escaped."""
    return text.replace("``", "`").replace("|", "\\|")


def _summary(cls: type) -> str:
    """The first line of a class's own docstring (not the signature dataclasses makes up)."""
    doc = vars(cls).get("__doc__") or ""
    if doc.startswith(f"{cls.__name__}("):
        return ""
    return _markdown(inspect.cleandoc(doc).split("\n")[0])


def dataclass_keys(cls: type, prefix: str = "") -> Iterator[ConfigKey]:
    """Every key of a config dataclass, nested dataclasses flattened into dotted keys."""
    hints = typing.get_type_hints(cls)
    meanings = {**_comment_docs(cls), **_attribute_docs(cls)}
    for item in dataclasses.fields(cls):
        key = f"{prefix}{item.name}"
        nested = _nested_dataclass(hints.get(item.name))
        type_text = str(item.type).replace("|", "\\|")
        meaning = _markdown(meanings.get(item.name) or NOTES.get(key, ""))
        if nested is not None:
            default = "`null`" if item.default is None else "(section)"
            yield ConfigKey(key, type_text, default, meaning or _summary(nested))
            yield from dataclass_keys(nested, f"{key}.")
        else:
            yield ConfigKey(key, type_text, _default(item), meaning)


def _table(keys: list[ConfigKey]) -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{k.key}` | `{k.type}` | {k.default} | {k.meaning} |" for k in keys]
    return "\n".join(rows)


def _ours(module: str) -> bool:
    return module.split(".")[0] == "unified"


def config_reference() -> str:
    """The whole page: the experiment's keys, then each registered task's and balancer's options."""
    from unified.engine.balancers import BALANCERS
    from unified.engine.experiment import ExperimentConfig
    from unified.task import TASKS

    parts = [_HEADER, "## Experiment\n", _table(list(dataclass_keys(ExperimentConfig))), ""]
    parts.append(
        "## Task options (`task_options.<task>.<key>`)\n\nOne section per registered task; a task's options "
        "apply when it is in `tasks`.\n"
    )
    # Only what this package registers: a plugin imported in the same process must not change the page.
    for name in sorted(n for n in TASKS.names() if _ours(TASKS.origin(n))):
        task = TASKS.get(name)
        keys = list(dataclass_keys(task.config_class, f"task_options.{name}."))
        parts.append(f"### `{name}`\n")
        parts.append(_table(keys) if keys else "No options.")
        parts.append("")
    parts.append(
        "## Balancer options (`balancer.options.<key>`)\n\nThe options of the balancer `balancer.name` "
        "picks.\n"
    )
    for name in sorted(n for n in BALANCERS.names() if _ours(BALANCERS.origin(n))):
        options = BALANCERS.get(name).options_class
        keys = list(dataclass_keys(options, "balancer.options.")) if dataclasses.is_dataclass(options) else []
        parts.append(f"### `{name}`\n")
        parts.append(_table(keys) if keys else "No options.")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def write_config_reference(path: str | Path) -> Path:
    """Write :func:`config_reference` to ``path`` (``docs/CONFIG.md``)."""
    path = Path(path)
    path.write_text(config_reference(), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write_config_reference(sys.argv[1] if len(sys.argv) > 1 else "docs/CONFIG.md"))


__all__ = ["REGENERATE", "ConfigKey", "config_reference", "dataclass_keys", "write_config_reference"]
