"""Quantize a saved Ringan checkpoint folder to int8 or int4 (weight-only, inside the model class)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..modeling import RinganForCausalLM
from ..modeling.quantization import QUANTIZED_MODULES, quantize_model_, resolve_quantization

# Files a tokenizer's save_pretrained may write: copied along, never counted in the checkpoint size.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
COPIED_FILES = ("generation_config.json", "README.md", "topic_contexts.json")  # what `ringan generate` reads


def folder_sizes(folder: str | Path) -> dict:
    """Bytes on disk of every top-level file of `folder`: `{"files": {name: bytes}, "total_bytes": int}` for
    everything but tokenizer files, and `{"tokenizer_files": {name: bytes}}` for those (not in the total)."""
    folder = Path(folder)
    files, tokenizer = {}, {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        (tokenizer if path.name in TOKENIZER_FILES else files)[path.name] = path.stat().st_size
    return {"files": files, "total_bytes": sum(files.values()), "tokenizer_files": tokenizer}


def quantize_folder(src: str | Path, dst: str | Path, bits: int, group_size: int | None = None) -> dict:
    """Load the Ringan checkpoint in `src`, quantize its weights and save the result to `dst`.

    Every bias-free Linear (attention and MLP projections, the LM head) and every Embedding (token, topic,
    context) is stored as int8 with one fp16 scale per row (`bits=8`), or as int4 packed two per byte with one
    fp16 scale per `group_size` weights of a row (`bits=4`). Norms, the gated attention's `decay_proj` and other
    small tensors stay fp32. The scheme is recorded in `config.quantization`; the result loads with plain
    `AutoModelForCausalLM.from_pretrained(dst)` (package imported) or with `trust_remote_code=True` (the
    modeling files, `quantization.py` included, are saved beside the weights), and runs at fp32 speed (each
    weight is dequantized once, on first use).

    Args:
        src: a folder written by `save_pretrained` of a float Ringan model.
        dst: the output folder (created; existing files of the same names are overwritten).
        bits: 8 or 4.
        group_size: weights per scale along a row; `None` = the default for `bits` (int8: one scale per row,
            written as 0; int4: 32); 0 = one scale per row.

    Returns:
        A report: `{"src", "dst", "quantization": {"bits", "group_size"}, "files": {name: bytes},
        "total_bytes", "tokenizer_files": {name: bytes}, "source_total_bytes", "copied": [names]}`; sizes
        count every file of the folder except tokenizer files (which are copied along).
    """
    src, dst = Path(src), Path(dst)
    spec = resolve_quantization(bits, group_size)
    model = RinganForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    if model.config.quantization or any(isinstance(m, QUANTIZED_MODULES) for m in model.modules()):
        raise ValueError(f"{src} is already quantized ({model.config.quantization}); quantize a float checkpoint")
    quantize_model_(model, **spec)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)

    copied = []
    for name in (*TOKENIZER_FILES, *COPIED_FILES):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    if "README.md" in copied:
        grouping = f"group size {spec['group_size']}" if spec["group_size"] else "one scale per row"
        with open(dst / "README.md", "a", encoding="utf-8") as f:
            f.write(
                f"\n\n## Quantization\n\nWeight-only int{spec['bits']} ({grouping}), made by "
                "`ringan.conversion.quantize_folder` from a float checkpoint.\n"
            )
    report = {"src": str(src), "dst": str(dst), "quantization": dict(spec)}
    report.update(folder_sizes(dst))
    report["source_total_bytes"] = folder_sizes(src)["total_bytes"]
    report["copied"] = copied
    return report
