"""`ringan quantize`, `ringan export`, `ringan convert`: thin wrappers over `ringan.conversion`.

Each checks its input first (the model folder, or the checkpoint file) and writes a new folder whole: never over
its input, never over a folder that holds something unless `--overwrite` (then replaced once the new one is
complete).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..files import check_output, save_atomically
from ..loading import load_model
from ..options import Options, option
from .common import model_folder, model_option, require_extra

OVERWRITE_HELP = "replace the output folder if it holds something (never the input)"


def _beside(model: Path, suffix: str) -> str:
    """`runs/x/model` -> `runs/x/model-int8`: the default output folder, next to the model."""
    return f"{str(model).rstrip('/')}-{suffix}"


@dataclass(frozen=True, kw_only=True)
class QuantizeOptions(Options):
    """Weight-only int8 or int4 quantization (embeddings and LM head included); loads with from_pretrained."""

    model: str | None = model_option()
    output: str = option("", "folder for the quantized model", default_text="MODEL-int{bits}")
    bits: int = option(8, "bits per weight", choices=(8, 4))
    group_size: int | None = option(
        None,
        "weights per scale along a row (0 = one scale per row)",
        minimum=0,
        maximum=65536,
        even=True,
        default_text="one scale per row for int8, 32 for int4",
    )
    overwrite: bool = option(False, OVERWRITE_HELP)


def quantize(options: QuantizeOptions | None = None, /, **overrides) -> dict:
    """Quantize the folder and print the report (sizes, scheme, copied files); returns it."""
    from ..conversion.quantize import quantize_folder

    o = QuantizeOptions.build(options, overrides)
    source = model_folder(o.model)
    output = check_output(o.output or _beside(source, f"int{o.bits}"), [source], o.overwrite)
    model, _ = load_model(source)  # every file checked before anything is written
    if model.config.quantization:
        raise UserError(f"{source}: is already quantized ({model.config.quantization}); quantize a float model")
    report = save_atomically(lambda tmp: quantize_folder(source, tmp, o.bits, o.group_size), output, "the model")
    report["dst"] = str(output)
    print(json.dumps(report, indent=1))
    return report


@dataclass(frozen=True, kw_only=True)
class ExportOptions(Options):
    """Export a model: ONNX prefill and decode graphs (state as explicit inputs/outputs)."""

    format: str = option("onnx", "the export format", choices=("onnx",))
    model: str | None = model_option()
    output: str = option("", "output folder", default_text="MODEL-onnx")
    quantize: str | None = option(None, "quantize the ONNX graphs (none: fp32)", choices=(None, "int8", "int4"))
    overwrite: bool = option(False, OVERWRITE_HELP)


def export(options: ExportOptions | None = None, /, **overrides) -> dict:
    """Export the graphs, check them against PyTorch and print the report; returns it."""
    o = ExportOptions.build(options, overrides)
    source = model_folder(o.model)
    output = check_output(o.output or _beside(source, "onnx"), [source], o.overwrite)
    require_extra("export", ("onnx", "onnxruntime", "onnxscript"))
    from ..conversion.onnx_export import export_onnx

    load_model(source)  # every file checked before anything is written
    report = save_atomically(lambda tmp: export_onnx(source, tmp, o.quantize), output, "the ONNX graphs")
    report["out_dir"] = str(output)
    print(json.dumps(report, indent=1))
    return report


@dataclass(frozen=True, kw_only=True)
class ConvertOptions(Options):
    """Import a checkpoint of the founding document's MyGenerativeModel as a Ringan warm start."""

    source: str = option("seed", "the model the checkpoint comes from", choices=("seed",))
    checkpoint: str = option("", "a state_dict file (.pt/.bin via torch.load(weights_only=True), or .safetensors)")
    output: str = option("", "folder for the Ringan checkpoint")
    tokenizer: str | None = option(None, "a tokenizer folder to save beside it")
    overwrite: bool = option(False, OVERWRITE_HELP)


def convert(options: ConvertOptions | None = None, /, **overrides) -> dict:
    """Convert the checkpoint to a Ringan model folder; returns the conversion report."""
    from ..conversion.seed import convert_seed_checkpoint

    o = ConvertOptions.build(options, overrides)
    checkpoint = Path(o.checkpoint)
    if not o.checkpoint or not checkpoint.is_file():
        raise UserError(f"{o.checkpoint or '--checkpoint'}: no such checkpoint file")
    if not o.output:
        raise UserError("--output is required")
    inputs = [checkpoint, *([o.tokenizer] if o.tokenizer else [])]
    output = check_output(o.output, inputs, o.overwrite)
    if o.tokenizer:
        from ..loading import load_tokenizer

        load_tokenizer(o.tokenizer)  # a folder that holds no usable tokenizer is refused before anything is written
    state = _read_state_dict(checkpoint)
    try:
        report = save_atomically(
            lambda tmp: convert_seed_checkpoint(state, tmp, o.tokenizer, source_name=checkpoint.name),
            output,
            "the model",
        )
    except ValueError as err:  # the tensors are not the reference model's
        raise UserError(f"{checkpoint}: {' '.join(str(err).split())[:200]}") from None
    report["out_dir"] = str(output)
    return report


def _read_state_dict(path: Path) -> dict:
    """The checkpoint's tensors, read safely, or one line naming the file and what is wrong with it."""
    from ..conversion.seed import load_state_dict
    from ..loading import unreadable_pickle

    try:
        return load_state_dict(path)
    except Exception as err:  # noqa: BLE001  (torch.load and safetensors raise many kinds of error)
        raise unreadable_pickle(path, err, "state_dict") from None
