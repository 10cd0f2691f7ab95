"""Conversions of Ringan checkpoints: weight-only int8/int4 quantization, ONNX export (with ONNX Runtime
generation) and import of the founding document's reference model (`MyGenerativeModel`) as a warm start.

`onnx` and `onnxruntime` are imported only when an ONNX function is called."""

from .onnx_export import export_onnx
from .onnx_runtime import onnx_generate
from .quantize import folder_sizes, quantize_folder
from .seed import convert_seed_checkpoint

__all__ = ["convert_seed_checkpoint", "export_onnx", "folder_sizes", "onnx_generate", "quantize_folder"]
