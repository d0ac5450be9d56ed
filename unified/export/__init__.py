"""Export of unified models for deployment: :mod:`unified.export.onnx` (ONNX graph with the decode inside,
per-task outputs, onnxruntime check), used by ``tools/export.py``."""

from unified.export.onnx import (
    EXPORT_OUTPUTS,
    CheckReport,
    ExportModule,
    check_onnx,
    export_onnx,
    generic_outputs,
    postprocess_decoded,
    simplify_onnx,
)

__all__ = [
    "EXPORT_OUTPUTS",
    "CheckReport",
    "ExportModule",
    "check_onnx",
    "export_onnx",
    "generic_outputs",
    "postprocess_decoded",
    "simplify_onnx",
]
