"""Convert an official YOLOR checkpoint (either branch) into a unified checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from unified.checkpoint import FORMAT, VERSION, save_atomic
from unified.interop.common import ConvertedModel, InteropError
from unified.interop.darknet import convert_darknet
from unified.interop.paper import convert_paper
from unified.interop.unpickler import OfficialObject, read_official_checkpoint
from unified.model import build_model, model_meta
from unified.structures import DatasetInfo


def convert_official(
    weights: str | Path, cfg: str | Path | None = None, class_names: list[str] | None = None
) -> ConvertedModel:
    """Read an official checkpoint safely and translate it.

    The branch is recognised from the checkpoint: a pickled ``Model`` with a ``yaml`` attribute is the
    ``paper`` branch (``cfg`` is then not needed); a ``module_list.*`` state_dict is the ``main`` branch and
    needs its darknet ``cfg``.

    Args:
        weights: The official checkpoint.
        cfg: The darknet cfg of a ``main`` checkpoint.
        class_names: Class names overriding the checkpoint's (``main`` checkpoints carry none).

    Raises:
        InteropError: if the checkpoint is neither format, a ``main`` checkpoint comes without ``cfg``, or
            the model cannot be translated (the message names the layer).
        UnsafeCheckpointError: if the checkpoint needs a global outside the allow-list.
    """
    checkpoint = read_official_checkpoint(weights)
    model = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    if isinstance(model, OfficialObject) and isinstance(model.get("yaml"), dict):
        converted = convert_paper(model, str(weights))
        if cfg is not None:
            converted.notes.append(f"--cfg {cfg} ignored: paper-branch checkpoints carry their model YAML")
        if class_names is not None:
            if len(class_names) != converted.model_config["nc"]:
                raise InteropError(
                    f"{len(class_names)} class names given for a model with {converted.model_config['nc']} classes"
                )
            converted.class_names = list(class_names)
        return converted
    if model is None:
        raise InteropError(f"{weights}: the checkpoint holds no 'model' entry")
    if cfg is None:
        raise InteropError(
            f"{weights} is a main-branch (darknet) checkpoint, which does not store its architecture: pass its "
            f"darknet cfg with --cfg (e.g. cfg/yolor_p6.cfg)"
        )
    return convert_darknet(checkpoint, cfg, class_names)


def build_converted(converted: ConvertedModel) -> Any:
    """Our ``UnifiedModel`` (eval mode) with the converted weights loaded strictly."""
    model = build_model(
        converted.model_config,
        tasks=("detect",),
        info=DatasetInfo(class_names=list(converted.class_names)),
        implicit_share=converted.implicit_share,
    )
    model.load_state_dict(converted.state_dict, strict=True)
    return model.eval()


def converted_checkpoint(
    converted: ConvertedModel, provenance: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A unified checkpoint dict (the training checkpoints' layout; loads with ``weights_only=True``)."""
    model = build_converted(converted)
    return {
        "format": FORMAT,
        "version": VERSION,
        **model_meta(model, {}, converted.implicit_share),
        "model": model.state_dict(),
        "ema": None,
        "converted_from": {
            "branch": converted.branch,
            "notes": list(converted.notes),
            "official_params": converted.official_params,
            **(provenance or {}),
        },
    }


def model_yaml_text(converted: ConvertedModel, header: str = "") -> str:
    """The converted model config as a model YAML (rows on one line each), for fine-tuning with ``--model``."""
    config = dict(converted.model_config)
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    for key, value in config.items():
        if key in ("backbone", "neck", "anchors"):
            lines.append(f"{key}:")
            start = 0 if key != "neck" else len(config.get("backbone", []))
            for offset, row in enumerate(value):
                comment = f"  # {start + offset}" if key != "anchors" else ""
                lines.append(f"  - {_flow(row)}{comment}")
        else:
            lines.append(f"{key}: {_flow(value)}")
    return "\n".join(lines) + "\n"


def _flow(value: Any) -> str:
    """``value`` as one line of flow-style YAML."""
    text = yaml.safe_dump([value], default_flow_style=True, width=100_000).strip()
    return text[1:-1]  # drop the brackets of the wrapping list


def save_converted(
    converted: ConvertedModel, out: str | Path, provenance: dict[str, Any] | None = None
) -> Path:
    """Write the unified checkpoint atomically; returns its path."""
    return save_atomic(converted_checkpoint(converted, provenance), out)


__all__ = ["build_converted", "convert_official", "converted_checkpoint", "model_yaml_text", "save_converted"]
