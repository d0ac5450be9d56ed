"""Export of unified models for deployment: :mod:`unified.export.onnx` (ONNX graph with the decode inside,
per-task outputs, onnxruntime check), used by ``tools/export.py``."""

from unified.export.onnx import (
    CheckReport,
    ExportModule,
    check_onnx,
    export_onnx,
    postprocess_decoded,
    simplify_onnx,
)

__all__ = [
    "CheckReport",
    "ExportModule",
    "check_onnx",
    "export_onnx",
    "postprocess_decoded",
    "simplify_onnx",
]
