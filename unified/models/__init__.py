"""Blocks, the body builder, the YOLO detection head, fusion and model info.

Public API: ``BLOCKS`` (block registry), ``Body``, ``IDetectHead``, ``init_detect_biases``,
``ModelConfig`` / ``load_model_config``, ``fuse_model`` / ``fuse_conv_bn``, ``model_info``.
"""

from unified.models.blocks import ACTIVATIONS, BLOCKS, Block, BuildContext, LayerDefaults, make_divisible
from unified.models.body import Body, LayerSpec
from unified.models.config import (
    HeadConfig,
    ModelConfig,
    NormConfig,
    load_model_config,
    model_config_from_text,
    with_nc,
)
from unified.models.fuse import Fusable, fuse_conv_bn, fuse_model
from unified.models.heads import IDetectHead, init_detect_biases
from unified.models.info import ModelInfo, conv_gflops, count_implicit_params, count_params, model_info

# Importing the darknet blocks registers them next to the paper ones.
from unified.models import darknet_blocks  # noqa: E402,F401  isort: skip

__all__ = [
    "ACTIVATIONS",
    "BLOCKS",
    "Block",
    "Body",
    "BuildContext",
    "Fusable",
    "HeadConfig",
    "IDetectHead",
    "LayerDefaults",
    "LayerSpec",
    "ModelConfig",
    "ModelInfo",
    "NormConfig",
    "conv_gflops",
    "count_implicit_params",
    "count_params",
    "fuse_conv_bn",
    "fuse_model",
    "init_detect_biases",
    "load_model_config",
    "make_divisible",
    "model_config_from_text",
    "model_info",
    "with_nc",
]
