"""`ringan quantize`, `ringan export`, `ringan convert`: thin wrappers over `ringan.conversion`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..options import Options, option
from .common import DEFAULT_MODEL


def _beside(model: str, suffix: str) -> str:
    """`runs/x/model` -> `runs/x/model-int8`: the default output folder, next to the model."""
    return f"{str(model).rstrip('/')}-{suffix}"


@dataclass(frozen=True, kw_only=True)
class QuantizeOptions(Options):
    """Weight-only int8 or int4 quantization (embeddings and LM head included); loads with from_pretrained."""

    model: str = option(DEFAULT_MODEL, "a saved model folder")
    output: str = option("", "folder for the quantized model", default_text="MODEL-int{bits}")
    bits: int = option(8, "bits per weight", choices=(8, 4))
    group_size: int | None = option(
        None,
        "weights per scale along a row (0 = one scale per row)",
        minimum=0,
        even=True,
        default_text="one scale per row for int8, 32 for int4",
    )


def quantize(options: QuantizeOptions | None = None, /, **overrides) -> dict:
    """Quantize the folder and print the report (sizes, scheme, copied files); returns it."""
    from ..conversion.quantize import quantize_folder

    o = QuantizeOptions.build(options, overrides)
    report = quantize_folder(o.model, o.output or _beside(o.model, f"int{o.bits}"), o.bits, o.group_size)
    print(json.dumps(report, indent=1))
    return report


@dataclass(frozen=True, kw_only=True)
class ExportOptions(Options):
    """Export a model: ONNX prefill and decode graphs (state as explicit inputs/outputs)."""

    format: str = option("onnx", "the export format", choices=("onnx",))
    model: str = option(DEFAULT_MODEL, "a saved model folder")
    output: str = option("", "output folder", default_text="MODEL-onnx")
    quantize: str | None = option(None, "quantize the ONNX graphs (none: fp32)", choices=(None, "int8", "int4"))


def export(options: ExportOptions | None = None, /, **overrides) -> dict:
    """Export the graphs, check them against PyTorch and print the report; returns it."""
    from ..conversion.onnx_export import export_onnx

    o = ExportOptions.build(options, overrides)
    report = export_onnx(o.model, o.output or _beside(o.model, "onnx"), o.quantize)
    print(json.dumps(report, indent=1))
    return report


@dataclass(frozen=True, kw_only=True)
class ConvertOptions(Options):
    """Import a checkpoint of the founding document's MyGenerativeModel as a Ringan warm start."""

    source: str = option("seed", "the model the checkpoint comes from", choices=("seed",))
    checkpoint: str = option("", "a state_dict file (.pt/.bin via torch.load(weights_only=True), or .safetensors)")
    output: str = option("", "folder for the Ringan checkpoint")
    tokenizer: str | None = option(None, "a tokenizer folder to save beside it")


def convert(options: ConvertOptions | None = None, /, **overrides) -> dict:
    """Convert the checkpoint to a Ringan model folder; returns the conversion report."""
    from ..conversion.seed import convert_seed_checkpoint

    o = ConvertOptions.build(options, overrides)
    if not o.checkpoint or not Path(o.checkpoint).is_file():
        raise UserError(f"{o.checkpoint or '--checkpoint'}: no such checkpoint file")
    if not o.output:
        raise UserError("--output is required")
    return convert_seed_checkpoint(o.checkpoint, o.output, o.tokenizer)
