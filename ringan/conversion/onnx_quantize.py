"""ONNX Runtime's own tools on the exported graphs: N-bit weight quantization (MatMulNBits, a quantized embedding
table) with its logging kept quiet, and one external weights file that the graphs share."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path


class _DropPreProcessAdvice(logging.Filter):
    """ONNX Runtime's quantizers log "Please consider to run pre-processing before quantization" on the root
    logger once per graph: advice for calibrated image models that says nothing to a user of this export."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet_ort_quantizer():
    """ONNX Runtime's N-bit quantizer configures the root logger when imported (INFO, with a handler) and logs a
    line per node: keep the process's logging as it was, and only the quantizer's warnings."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    quantizer_logger = logging.getLogger("onnxruntime.quantization")
    previous = quantizer_logger.level
    try:
        from onnxruntime.quantization import matmul_nbits_quantizer  # noqa: F401  (its import-time basicConfig)

        root.handlers[:] = handlers
        root.setLevel(level)
        quantizer_logger.setLevel(logging.WARNING)
        advice = _DropPreProcessAdvice()
        root.addFilter(advice)
        yield
    finally:
        root.removeFilter(advice)
        quantizer_logger.setLevel(previous)


def quantize_graph(path: Path, quantize: str, block_size: int = 32) -> None:
    """Quantize `path` in place with ONNX Runtime's tools: every MatMul with a constant weight becomes
    `MatMulNBits` (8 or 4 bits, symmetric, one scale per `block_size` inputs) with `accuracy_level=4`, so ORT
    quantizes the activations to int8 and runs int8 dot products (VNNI/AMX where the CPU has them) instead of
    dequantizing the weights to fp32; the embedding table becomes int8 (`quantize_dynamic`'s Gather) or 4-bit
    (`GatherBlockQuantized`)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    bits = {"int8": 8, "int4": 4}[quantize]
    with tempfile.TemporaryDirectory() as tmp, _quiet_ort_quantizer():
        float_path = Path(tmp) / path.name
        shutil.move(str(path), float_path)
        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(float_path)),
            bits=bits,
            block_size=block_size,
            is_symmetric=True,
            accuracy_level=4,
            # ORT quantizes Gather (the embedding table) to 4 bits only; 8-bit tables are done below
            op_types_to_quantize=("MatMul", "Gather") if bits == 4 else ("MatMul",),
            quant_axes=(("MatMul", 0), ("Gather", 1)),
        )
        quantizer.process()
        if bits == 4:
            quantizer.model.save_model_to_file(str(path), use_external_data_format=False)
            return
        matmuls_path = Path(tmp) / f"matmuls-{path.name}"
        quantizer.model.save_model_to_file(str(matmuls_path), use_external_data_format=False)
        quantize_dynamic(matmuls_path, path, weight_type=QuantType.QInt8, op_types_to_quantize=["Gather"])


def share_weights(paths: list[Path], data_name: str = "weights.bin", min_bytes: int = 1024) -> None:
    """Store the large initializers of the graphs in `paths` ONCE, in one external data file beside them (and
    drop the exporter's per-node debug metadata).

    prefill and decode hold the same weights; ONNX has no cross-file sharing, but external data is just
    (file, offset, length), so both graphs can point at the same bytes. Tensors are matched by content, so this
    holds after any quantizer renamed them. Offsets are 4 KiB-aligned (ONNX Runtime may memory-map the file).
    """
    import hashlib

    import onnx

    models = [onnx.load(str(p)) for p in paths]
    folder = paths[0].parent
    placed: dict[str, tuple[int, int]] = {}
    with open(folder / data_name, "wb") as data:
        for model in models:
            for tensor in model.graph.initializer:
                raw = tensor.raw_data
                if tensor.data_location == onnx.TensorProto.EXTERNAL or len(raw) < min_bytes:
                    continue
                key = hashlib.sha256(raw).hexdigest()
                if key not in placed:
                    data.write(b"\0" * (-data.tell() % 4096))
                    placed[key] = (data.tell(), len(raw))
                    data.write(raw)
                offset, length = placed[key]
                tensor.ClearField("raw_data")
                tensor.data_location = onnx.TensorProto.EXTERNAL
                del tensor.external_data[:]
                for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(length))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = k, v
    for model, path in zip(models, paths):
        for node in model.graph.node:  # the exporter's per-node debug info (stack traces with local paths)
            del node.metadata_props[:]
        path.write_bytes(model.SerializeToString())


def nbits_available() -> str | None:
    """None if ORT's N-bit weight quantizer is importable, else the reason."""
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the installed onnxruntime
        return f"onnxruntime has no MatMulNBitsQuantizer ({err})"
    return None
