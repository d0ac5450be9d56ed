"""Import of official YOLOR checkpoints (``main``: darknet cfg + state_dict; ``paper``: pickled ``Model``).

Public API:

* :func:`convert_official` reads a checkpoint with the restricted unpickler and translates it into a
  :class:`ConvertedModel` (our model config, state_dict, class names); :func:`save_converted` writes it as a
  unified checkpoint that ``unified.load`` reads with ``weights_only=True``.
* :func:`read_official_checkpoint` / :class:`RestrictedUnpickler`: unpickling that never executes code.
* :func:`translate_darknet` / :func:`parse_darknet_cfg` and :func:`translate_paper_yaml`: the model
  definitions alone (e.g. to count the parameters of an official cfg).
* :func:`relayout`: the converted weights under another config of the same network (the zoo YAMLs),
  verified by equal outputs.

Inference on files (sources, writers, model-mode tracking) is :mod:`unified.inference`; ONNX export is
:mod:`unified.export`.
"""

from unified.interop.common import ConvertedModel, InteropError, map_state_dict
from unified.interop.convert import (
    build_converted,
    convert_official,
    converted_checkpoint,
    model_yaml_text,
    save_converted,
)
from unified.interop.darknet import (
    DarknetSection,
    DarknetTranslation,
    convert_darknet,
    parse_darknet_cfg,
    translate_darknet,
)
from unified.interop.paper import convert_paper, translate_paper_yaml
from unified.interop.relayout import relayout
from unified.interop.unpickler import (
    OfficialCheckpointError,
    OfficialObject,
    RestrictedUnpickler,
    UnsafeCheckpointError,
    read_official_checkpoint,
)

__all__ = [
    "ConvertedModel",
    "DarknetSection",
    "DarknetTranslation",
    "InteropError",
    "OfficialCheckpointError",
    "OfficialObject",
    "RestrictedUnpickler",
    "UnsafeCheckpointError",
    "build_converted",
    "convert_darknet",
    "convert_official",
    "convert_paper",
    "converted_checkpoint",
    "map_state_dict",
    "model_yaml_text",
    "parse_darknet_cfg",
    "read_official_checkpoint",
    "relayout",
    "save_converted",
    "translate_darknet",
    "translate_paper_yaml",
]
