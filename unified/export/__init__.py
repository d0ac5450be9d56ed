"""Export of unified models for deployment: :mod:`unified.export.onnx` (ONNX graph with the decode inside,
per-task outputs, metadata for the ONNX backend, onnxruntime check), :mod:`unified.export.end2end` (NMS in
the graph) and :mod:`unified.export.int8` (static int8, calibrated and evaluated), used by
``tools/export.py``."""

from unified.export.end2end import End2EndNMS
from unified.export.onnx import (
    CheckReport,
    ExportModule,
    check_onnx,
    export_onnx,
    postprocess_decoded,
    read_metadata,
    simplify_onnx,
)

__all__ = [
    "CheckReport",
    "End2EndNMS",
    "ExportModule",
    "check_onnx",
    "export_onnx",
    "postprocess_decoded",
    "read_metadata",
    "simplify_onnx",
]
