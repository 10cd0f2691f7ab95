"""Export a Ringan checkpoint to ONNX: two graphs with explicit recurrent state (and a conditioning graph).

Graphs (batch size 1; `L` layers, `H` heads of width `d`):

- `condition.onnx` (unless `conditioning="none"`): the conversation's topic + context vector `condition [1, 1,
  hidden]`, from `topic_ids [1]` / `context_ids [1]` (`conditioning="ids"`, 0 = unknown) or from the Topik / Konteks
  tokens `topic_input_ids [1, Lt]`, `topic_attention_mask [1, Lt]`, `context_input_ids`, `context_attention_mask`
  (`conditioning="text"`; a mask of zeros means "none").
- `prefill.onnx`: one *segment* of the prompt. Inputs `input_ids [1, T]` (T dynamic, at most the window),
  `position [1]` (tokens already seen), `condition [1, 1, hidden]` and the recurrent state of every layer stacked:
  `state [L, 1, H, d, d]`, plus `normalizer [L, 1, H, d]` for `attention_type="linear"` and
  `conv [L, 1, 3 * hidden, conv_size - 1]` with a short convolution. Outputs `logits [1, vocab]` of the last
  position, `position_out [1]` and the new states (`state_out`, ...).
- `decode.onnx`: the same signature with `T = 1`, computed by the lean recurrent step.

Why a segment graph with state inputs rather than one graph over the whole prompt: the chunkwise kernel loops
over a data-dependent number of chunks, which an exported graph cannot do without a Loop op. Each prefill call
is exactly ONE chunk of the chunkwise algorithm (intra-segment attention as a masked, decayed T x T product,
plus the contribution of the incoming state; for the delta rule, the chunk's triangular system is solved by
block forward substitution over 8-row blocks, `solve_unit_lower_blockwise`) with no loop at all, and `OnnxRingan` feeds a prompt through it
`window` tokens at a time (the model's `chunk_size`, 64 by default), carrying the state. Work is O(T * window)
and memory is constant in the prompt length, as in PyTorch; a fresh prompt starts from zero states.

What is exported is in `onnx_graphs`, the graph quantization in `onnx_quantize`, generation from an export in
`onnx_runtime`. `onnx` and `onnxruntime` are imported inside the functions, so the package imports without them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import warnings
from pathlib import Path

import torch

from ..modeling import RinganForCausalLM
from ..modeling.fused_step import FUSED_MIXERS
from ..modeling.quantization import QUANTIZED_MODULES, dequantize_model_
from .onnx_graphs import (
    CONDITION_GRAPHS,
    CONDITION_INPUTS,
    RinganOnnxStep,
    example_inputs,
    fusable_norms,
    io_names,
    matmul_linears,
    one_chunk_attention,
    shared_projections,
    state_shapes,
)
from .onnx_quantize import nbits_available, quantize_graph, share_weights
from .onnx_runtime import META_FILE, OnnxRingan
from .quantize import TOKENIZER_FILES, folder_sizes

QUANTIZE_CHOICES = (None, "int8", "int4")


def _export_condition_graph(model: RinganForCausalLM, path: Path) -> None:
    names = CONDITION_INPUTS[model.config.conditioning]
    if model.config.conditioning == "ids":
        example = {name: torch.ones(1, dtype=torch.long) for name in names}
        dynamic = None
    else:
        example = {name: torch.ones(1, 5, dtype=torch.long) for name in names}
        dynamic = {name: {1: torch.export.Dim(f"{name.split('_')[0]}_length", min=1, max=1 << 16)} for name in names}
    with torch.no_grad(), matmul_linears(list(model.model.conditioning.modules())):
        program = torch.onnx.export(
            CONDITION_GRAPHS[model.config.conditioning](model).eval(),
            (),
            kwargs=example,
            dynamo=True,
            input_names=names,
            output_names=["condition"],
            external_data=False,
            opset_version=21,
            verbose=False,
            dynamic_shapes=dynamic,
        )
    program.save(str(path))


def _export_graph(step: RinganOnnxStep, config, path: Path, dynamic: bool) -> None:
    inputs, outputs = io_names(config)
    example = example_inputs(config, 8 if dynamic else 1)
    kwargs = {}
    if dynamic:
        seq = torch.export.Dim("seq_len", min=1, max=config.chunk_size)
        kwargs["dynamic_shapes"] = {name: ({1: seq} if name == "input_ids" else None) for name in example}
    with torch.no_grad():
        program = torch.onnx.export(
            step,
            (),
            kwargs=example,
            dynamo=True,
            input_names=inputs,
            output_names=outputs,
            external_data=False,
            opset_version=21,  # 21 has the int4 types ORT's 4-bit quantizer writes
            verbose=False,
            **kwargs,
        )
    program.save(str(path))


@contextlib.contextmanager
def _quiet_exporter():
    """torch's exporter warns about what does not apply here (torchvision ops it skips, its own deprecated pytree
    calls, dynamic axis names it merges), a dozen lines per export: keep them off the user's terminal."""
    exporter_logger = logging.getLogger("torch.onnx")
    previous = exporter_logger.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exporter_logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            exporter_logger.setLevel(previous)


def _end_of_turn_ids(model_dir: Path, config) -> list[int]:
    """The ids a reply stops at: the saved generation config's `eos_token_id` list (`</s>` and every newline
    token: an utterance is one line), else the config's end-of-sequence id."""
    path = model_dir / "generation_config.json"
    eos = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id") if path.is_file() else None
    eos = config.eos_token_id if eos is None else eos
    return sorted({int(i) for i in (eos if isinstance(eos, list) else [eos]) if i is not None})


def export_onnx(model_dir: str | Path, out_dir: str | Path, quantize: str | None = None) -> dict:
    """Export the Ringan checkpoint in `model_dir` to `out_dir/prefill.onnx` and `out_dir/decode.onnx`.

    The graphs carry the per-layer recurrent state as explicit inputs/outputs (see the module docstring), so
    generation runs in ONNX Runtime in constant memory: `onnx_generate(out_dir, ids, n)`. A weight-quantized
    checkpoint is dequantized to fp32 first (the ONNX graph is then quantized by ONNX Runtime's own tools).

    Args:
        model_dir: a folder written by `save_pretrained` (float or `quantize_folder` output).
        out_dir: the output folder (created). Also receives `ringan_onnx.json` (what `onnx_generate` needs:
            layer/state shapes, prefill window, special token ids), `config.json` and the tokenizer files.
        quantize: `None` (fp32), `"int8"` or `"int4"`: ORT's `MatMulNBitsQuantizer` (MatMulNBits, symmetric,
            block 32, int8 compute) and a quantized embedding table (`quantize_graph`). If ORT lacks the
            quantizer, the graphs stay fp32 and the report says so under `"skipped"`.

    Returns:
        `{"out_dir", "quantize" (what was applied), "skipped" (reason or None), "files": {name: bytes},
        "total_bytes", "tokenizer_files", "check": {"max_abs_logit_diff": float, "tokens": int}}`; the check
        runs a short prompt through ORT (prefill + decode) and PyTorch and compares the logits.
    """
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES}, got {quantize!r}")
    import onnxruntime  # noqa: F401  (fail early with a clear ImportError)

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = RinganForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    source_quantization = model.config.quantization
    if source_quantization or any(isinstance(m, QUANTIZED_MODULES) for m in model.modules()):
        dequantize_model_(model)
    config = model.config
    step = RinganOnnxStep(model).eval()

    graphs = ["prefill.onnx", "decode.onnx"]
    with _quiet_exporter():
        with fusable_norms(model):
            decode = RinganOnnxStep(model, fused=config.attention_type in FUSED_MIXERS).eval()
            with one_chunk_attention(model), shared_projections(model, decode.fused or []):
                _export_graph(step, config, out_dir / "prefill.onnx", dynamic=True)
            _export_graph(decode, config, out_dir / "decode.onnx", dynamic=False)
        if config.conditioning != "none":
            _export_condition_graph(model, out_dir / "condition.onnx")
            graphs.append("condition.onnx")

    skipped = None
    applied = quantize
    if quantize and (skipped := nbits_available()):
        applied = None
    if applied:
        for name in graphs:
            quantize_graph(out_dir / name, applied)

    share_weights([out_dir / name for name in graphs])

    inputs, outputs = io_names(config)
    meta = {
        "format": "ringan-onnx-1",
        "quantize": applied,
        "source_quantization": source_quantization,
        "attention_type": config.attention_type,
        "conditioning": config.conditioning,
        "condition_inputs": CONDITION_INPUTS[config.conditioning],
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "state_shapes": {name: list(shape) for name, shape in state_shapes(config).items()},
        "vocab_size": config.vocab_size,
        "prefill_window": config.chunk_size,
        "inputs": inputs,
        "outputs": outputs,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "end_of_turn_ids": _end_of_turn_ids(model_dir, config),
        "pad_token_id": config.pad_token_id,
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=1))
    config.to_json_file(out_dir / "config.json")  # for reference (topic/context names); no code copied
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)

    check = _check(model, out_dir)
    report = {"out_dir": str(out_dir), "quantize": applied, "skipped": skipped}
    report.update(folder_sizes(out_dir))
    report["check"] = check
    return report


@torch.no_grad()
def _check(model: RinganForCausalLM, out_dir: Path, prompt_len: int = 70, new: int = 3) -> dict:
    torch.manual_seed(0)
    vocab = max(model.config.vocab_size, 5)
    ids = torch.randint(4, vocab, (1, prompt_len + new))
    # with a conditioning vector: it is added to every token, so it is where the graphs' numerics are tested hardest
    mode = model.config.conditioning
    plain = {"ids": {"topic_ids": 1, "context_ids": 1}, "none": {}}.get(mode, {})
    if mode == "text":
        plain = {"topic_input_ids": torch.randint(4, vocab, (6,)).tolist(), "context_input_ids": [5, 6, 7, 8]}
    runner = OnnxRingan(out_dir)
    runner.set_conditioning(**plain)
    worst = 0.0
    state = runner.initial_state()
    logits, state = runner.feed(ids[0, :prompt_len].tolist(), state)
    cond = {k: torch.tensor([v]) for k, v in plain.items()}  # batch 1
    full = model(ids, use_cache=False, **cond).logits[0]
    worst = max(worst, float((torch.from_numpy(logits) - full[prompt_len - 1]).abs().max()))
    for t in range(prompt_len, prompt_len + new):
        logits, state = runner.feed([int(ids[0, t])], state)
        worst = max(worst, float((torch.from_numpy(logits) - full[t]).abs().max()))
    return {"max_abs_logit_diff": worst, "tokens": prompt_len + new}


__all__ = ["QUANTIZE_CHOICES", "export_onnx"]
