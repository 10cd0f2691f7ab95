"""Export a Ringan checkpoint to ONNX (two graphs with explicit recurrent state) and generate with ONNX Runtime.

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

`onnx` and `onnxruntime` are imported inside the functions, so the package imports without them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import types
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling import RinganForCausalLM
from ..modeling.fused_step import FUSED_MIXERS, FusedDeltaLayer
from ..modeling.mixer_delta import RinganDeltaNet
from ..modeling.modules import RinganRMSNorm
from ..modeling.ops_delta_rule import chunk_delta_rule, solve_unit_lower_blockwise
from ..modeling.ops_linear_attention import chunk_linear_attention
from ..modeling.quantization import QUANTIZED_MODULES, dequantize_model_
from .quantize import TOKENIZER_FILES, folder_sizes

META_FILE = "ringan_onnx.json"
QUANTIZE_CHOICES = (None, "int8", "int4")


def _segment_attend(self, q, k, v, log_decay, state):
    """`RinganLinearAttention._attend` for the prefill graph: the whole segment is one chunk (no loop, dynamic T)."""
    return chunk_linear_attention(q, k, v, log_decay, state, chunk_size=q.shape[2])


def _segment_attend_delta(self, q, k, v, beta, log_decay, state):
    """`RinganDeltaNet._attend` for the prefill graph: one chunk, its triangular solve loop-free and blockwise."""

    def solve(lower, rhs):
        return solve_unit_lower_blockwise(lower, rhs, max_size=self.chunk_size)

    return chunk_delta_rule(q, k, v, beta, log_decay, state, chunk_size=q.shape[2], solve_chunk=solve)


@contextlib.contextmanager
def _one_chunk_attention(model: RinganForCausalLM):
    """Temporarily route every mixer of `model` through its one-chunk form (instance attributes, removed on
    exit), so the exported prefill reuses the layers' own forward code."""
    attentions = [layer.self_attn for layer in model.model.layers]
    try:
        for attn in attentions:
            one_chunk = _segment_attend_delta if isinstance(attn, RinganDeltaNet) else _segment_attend
            attn._attend = types.MethodType(one_chunk, attn)
        yield
    finally:
        for attn in attentions:
            attn.__dict__.pop("_attend", None)


class _SlicedProjection:
    """`forward` of one linear layer of a group that reads the same input: the group's concatenated weight (a
    `fused_step._Projection`) runs once per input and each layer returns its slice."""

    def __init__(self, projection, start: int, stop: int, shared: dict):
        self.projection, self.start, self.stop, self.shared = projection, start, stop, shared

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared.get("input") is not x:
            self.shared.update(input=x, output=self.projection(x))
        return self.shared["output"][..., self.start : self.stop]


@contextlib.contextmanager
def _shared_projections(model: RinganForCausalLM, fused: list[FusedDeltaLayer]):
    """Temporarily make the linear layers of `model` that the fused decode step concatenates (q/k/v/gate, beta/
    decay, the MLP's gate/up) compute through those concatenated weights, so that the prefill graph holds the same
    weight tensors as the decode graph and `weights.bin` stores them once (not once per form: +2.5 MB in int8)."""
    patched = []
    try:
        for step in fused:
            for projection in (step.in_proj, step.gate_proj, step.mlp_in):
                if projection.weight is None:  # only float weights concatenate (export dequantizes first)
                    continue
                shared, start = {}, 0
                for module in projection.layers:
                    stop = start + module.out_features
                    module.forward = _SlicedProjection(projection, start, stop, shared)
                    patched.append(module)
                    start = stop
        yield
    finally:
        for module in patched:
            module.__dict__.pop("forward", None)


def _rms_norm_for_onnx_runtime(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """`RinganRMSNorm.forward` in the exact form ONNX Runtime fuses into one SimplifiedLayerNormalization node
    (Pow, ReduceMean, Add, Sqrt, Div, Mul); torch's `rms_norm` exports as 7 nodes with a Reciprocal, which it
    does not fuse."""
    x = hidden_states.float()
    out = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
    return (out * self.weight.float()).to(hidden_states.dtype)


@contextlib.contextmanager
def _instance_forwards(modules: list[nn.Module], forward):
    """Temporarily bind `forward` as each module's own `forward` (an instance attribute, removed on exit)."""
    try:
        for module in modules:
            module.forward = types.MethodType(forward, module)
        yield
    finally:
        for module in modules:
            module.__dict__.pop("forward", None)


def _fusable_norms(model: RinganForCausalLM):
    """Temporarily give every RMSNorm of `model` the form ONNX Runtime fuses."""
    return _instance_forwards([m for m in model.modules() if isinstance(m, RinganRMSNorm)], _rms_norm_for_onnx_runtime)


def state_names(config) -> list[str]:
    """The per-layer state tensors of a model with this config, in graph order."""
    names = ["state"]
    if config.attention_type == "linear":
        names.append("normalizer")
    if config.conv_size:
        names.append("conv")
    return names


def _state_shapes(config) -> dict[str, tuple[int, ...]]:
    heads, dim = config.num_attention_heads, config.head_dim
    shapes = {"state": (1, heads, dim, dim), "normalizer": (1, heads, dim)}
    shapes["conv"] = (1, 3 * config.hidden_size, max(config.conv_size - 1, 0))
    return {name: shapes[name] for name in state_names(config)}


class RinganOnnxStep(nn.Module):
    """Thin wrapper: embeddings + conditioning vector + the model's decoder layers + final norm + LM head on the
    last position, with the recurrent state as explicit tensors (each stacked over layers). The same module serves
    prefill (T tokens) and decode (T = 1)."""

    def __init__(self, model: RinganForCausalLM, fused: bool = False):
        super().__init__()
        self.lm = model
        self.names = state_names(model.config)
        # the decode graph of a delta-rule model: the fused one-token layers (212 nodes against 250 in fp32)
        self.fused = [FusedDeltaLayer(layer) for layer in model.model.layers] if fused else None

    def forward(self, input_ids, position, condition, state, normalizer=None, conv=None):
        given = {"state": state, "normalizer": normalizer, "conv": conv}
        states = [given[name] for name in self.names]
        core = self.lm.model
        seq_len = input_ids.shape[1]
        hidden = core.embed_tokens(input_ids) + condition
        steps = torch.arange(seq_len, device=input_ids.device, dtype=position.dtype)
        cos, sin = core.rotary_emb(position[:, None] + steps[None, :])
        new_states: dict[str, list] = {name: [] for name in self.names}
        for i, layer in enumerate(core.layers):
            layer_state = {name: tensor[i] for name, tensor in zip(self.names, states)}
            if self.fused is not None:  # one token: the layer's state dict is updated in place
                hidden, updated = self.fused[i](hidden, cos, sin, layer_state), layer_state
            else:
                hidden, updated = layer(hidden, cos, sin, None, layer_state)
            for name in self.names:
                new_states[name].append(updated[name])
        # RMSNorm is per position: only the last one is needed. Kept 3-D so the head exports as a MatMul
        # (a 2-D input becomes Gemm, which ORT's 4-bit quantizer skips).
        last = core.norm(hidden[:, -1:])
        logits = self.lm.lm_head(last)[:, 0].float()
        return (logits, position + seq_len, *(torch.stack(new_states[name]) for name in self.names))


CONDITION_INPUTS = {
    "ids": ["topic_ids", "context_ids"],
    "text": ["topic_input_ids", "topic_attention_mask", "context_input_ids", "context_attention_mask"],
    "none": [],
}


class RinganOnnxCondition(nn.Module):
    """The model's own conditioning module as a graph: its inputs (see `CONDITION_INPUTS`) -> `[1, 1, hidden]`.
    torch.export needs named arguments (not `**inputs`) to attach dynamic shapes to them, hence one subclass per
    mode."""

    def __init__(self, model: RinganForCausalLM):
        super().__init__()
        self.lm = model

    def condition(self, inputs: dict) -> torch.Tensor:
        core = self.lm.model
        return core.conditioning(core.embed_tokens, 1, 1, inputs).expand(1, 1, -1)


class _IdsCondition(RinganOnnxCondition):
    def forward(self, topic_ids, context_ids):
        return self.condition({"topic_ids": topic_ids, "context_ids": context_ids})


class _TextCondition(RinganOnnxCondition):
    def forward(self, topic_input_ids, topic_attention_mask, context_input_ids, context_attention_mask):
        names = CONDITION_INPUTS["text"]
        return self.condition(
            dict(zip(names, (topic_input_ids, topic_attention_mask, context_input_ids, context_attention_mask)))
        )


def _io_names(config) -> tuple[list[str], list[str]]:
    names = state_names(config)
    inputs = ["input_ids", "position", "condition", *names]
    outputs = ["logits", "position_out", *(f"{name}_out" for name in names)]
    return inputs, outputs


def _example_inputs(config, seq_len: int) -> dict:
    layers = config.num_hidden_layers
    ids = torch.randint(4, max(config.vocab_size, 5), (1, seq_len))
    example = {"input_ids": ids, "position": torch.zeros(1, dtype=torch.long)}
    example["condition"] = torch.zeros(1, 1, config.hidden_size)
    example.update({name: torch.zeros(layers, *shape) for name, shape in _state_shapes(config).items()})
    return example


def _linear_3d(self, x: torch.Tensor) -> torch.Tensor:
    """`nn.Linear.forward` through a 3-D view: exported as MatMul (which ORT's weight quantizers take), not Gemm."""
    return F.linear(x[None], self.weight, self.bias)[0]


def _matmul_linears(modules: list[nn.Module]):
    """Temporarily route the linear layers among `modules` through `_linear_3d`: the conditioning projections act
    on a pooled `[1, hidden]` vector, which would export as Gemm and stay in float in a quantized export."""
    return _instance_forwards([m for m in modules if isinstance(m, nn.Linear)], _linear_3d)


def _export_condition_graph(model: RinganForCausalLM, path: Path) -> None:
    names = CONDITION_INPUTS[model.config.conditioning]
    if model.config.conditioning == "ids":
        example = {name: torch.ones(1, dtype=torch.long) for name in names}
        dynamic = None
    else:
        example = {name: torch.ones(1, 5, dtype=torch.long) for name in names}
        dynamic = {name: {1: torch.export.Dim(f"{name.split('_')[0]}_length", min=1, max=1 << 16)} for name in names}
    with torch.no_grad(), _matmul_linears(list(model.model.conditioning.modules())):
        program = torch.onnx.export(
            {"ids": _IdsCondition, "text": _TextCondition}[model.config.conditioning](model).eval(),
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
    inputs, outputs = _io_names(config)
    example = _example_inputs(config, 8 if dynamic else 1)
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


def _quantize_graph(path: Path, quantize: str, block_size: int = 32) -> None:
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


def _share_weights(paths: list[Path], data_name: str = "weights.bin", min_bytes: int = 1024) -> None:
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


def _nbits_available() -> str | None:
    """None if ORT's N-bit weight quantizer is importable, else the reason."""
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the installed onnxruntime
        return f"onnxruntime has no MatMulNBitsQuantizer ({err})"
    return None


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
            block 32, int8 compute) and a quantized embedding table (`_quantize_graph`). If ORT lacks the
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
        with _fusable_norms(model):
            decode = RinganOnnxStep(model, fused=config.attention_type in FUSED_MIXERS).eval()
            with _one_chunk_attention(model), _shared_projections(model, decode.fused or []):
                _export_graph(step, config, out_dir / "prefill.onnx", dynamic=True)
            _export_graph(decode, config, out_dir / "decode.onnx", dynamic=False)
        if config.conditioning != "none":
            _export_condition_graph(model, out_dir / "condition.onnx")
            graphs.append("condition.onnx")

    skipped = None
    applied = quantize
    if quantize and (skipped := _nbits_available()):
        applied = None
    if applied:
        for name in graphs:
            _quantize_graph(out_dir / name, applied)

    _share_weights([out_dir / name for name in graphs])

    inputs, outputs = _io_names(config)
    meta = {
        "format": "ringan-onnx-1",
        "quantize": applied,
        "source_quantization": source_quantization,
        "attention_type": config.attention_type,
        "conditioning": config.conditioning,
        "condition_inputs": CONDITION_INPUTS[config.conditioning],
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "state_shapes": {name: list(shape) for name, shape in _state_shapes(config).items()},
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


class OnnxRingan:
    """Generation with ONNX Runtime from a folder written by `export_onnx` (batch size 1).

    Keep one instance to reuse its sessions; `onnx_generate` builds one per call. `set_conditioning(...)` takes
    the same conditioning inputs as the model's forward (`topic_ids` / `context_ids`, or `topic_input_ids` /
    `context_input_ids` token lists) and holds the vector until changed.
    """

    def __init__(self, out_dir: str | Path, threads: int | None = None):
        import onnxruntime as ort

        self.out_dir = out_dir = Path(out_dir)
        self.meta = json.loads((out_dir / META_FILE).read_text())
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.prefill_session = ort.InferenceSession(str(out_dir / "prefill.onnx"), options, providers=providers)
        self.decode_session = ort.InferenceSession(str(out_dir / "decode.onnx"), options, providers=providers)
        self.condition_session = None
        if (out_dir / "condition.onnx").is_file():
            self.condition_session = ort.InferenceSession(str(out_dir / "condition.onnx"), options, providers=providers)
        self.set_conditioning()  # none given: "unknown" for ids, nothing for text

    def set_conditioning(self, **inputs) -> None:
        """The conversation's topic/context (the model's conditioning inputs, batch 1); nothing given = none."""
        import numpy as np

        names = self.meta["condition_inputs"]
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: this export takes {names or 'no conditioning'}")
        given = {k: v for k, v in inputs.items() if v is not None}
        if self.condition_session is None or (not given and self.meta["conditioning"] != "ids"):
            self.condition = np.zeros((1, 1, self.meta["hidden_size"]), dtype=np.float32)
            return
        feeds = {}
        for name in names:
            if self.meta["conditioning"] == "ids":
                feeds[name] = np.asarray([int(given.get(name, 0))], dtype=np.int64)
            elif name.endswith("_input_ids"):
                ids = np.asarray(given.get(name, []), dtype=np.int64).reshape(-1)
                mask_name = name.replace("_input_ids", "_attention_mask")
                mask = np.asarray(given.get(mask_name, np.ones_like(ids)), dtype=np.int64).reshape(-1)
                if ids.size == 0:  # "no topic": one masked token
                    ids, mask = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
                feeds[name], feeds[mask_name] = ids[None], mask[None]
        self.condition = self.condition_session.run(None, feeds)[0].astype(np.float32)

    def initial_state(self) -> dict:
        """Zero states at position 0 (a fresh conversation)."""
        import numpy as np

        layers = self.meta["num_hidden_layers"]
        state = {"position": np.zeros(1, dtype=np.int64)}
        for name, shape in self.meta["state_shapes"].items():
            state[name] = np.zeros((layers, *shape), dtype=np.float32)
        return state

    def _run(self, session, ids: list[int], state: dict):
        import numpy as np

        feeds = {"input_ids": np.asarray([ids], dtype=np.int64), "condition": self.condition, **state}
        out = session.run(None, feeds)
        new_state = {name.replace("_out", ""): value for name, value in zip(self.meta["outputs"][1:], out[1:])}
        return out[0][0], new_state

    def feed(self, ids: list[int], state: dict):
        """Run `ids` (tokens the state has not seen) and return `(last logits [vocab] np.float32, new state)`:
        one token goes through `decode.onnx`, more through `prefill.onnx` a window at a time."""
        if not ids:
            raise ValueError("feed needs at least one token")
        if len(ids) == 1:
            return self._run(self.decode_session, ids, state)
        window = max(int(self.meta["prefill_window"]), 1)
        for start in range(0, len(ids), window):
            logits, state = self._run(self.prefill_session, ids[start : start + window], state)
        return logits, state

    def generate(self, input_ids, max_new_tokens: int, stop_at_eos: bool = True, **conditioning) -> list[int]:
        """Greedy generation; returns the prompt's ids followed by the generated ones (a list of ints), like a row
        of `model.generate(..., do_sample=False)`. It stops at the end of the turn (`</s>` or a newline token, as
        the saved generation config says) unless `stop_at_eos=False`. `conditioning`: as `set_conditioning`."""
        import numpy as np

        prompt = np.asarray(input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids, dtype=np.int64)
        tokens = prompt.reshape(-1).tolist()
        if not tokens:
            raise ValueError("the prompt is empty")
        self.set_conditioning(**conditioning)  # none given: no (or "unknown") topic and context
        stops = set(self.meta["end_of_turn_ids"]) if stop_at_eos else set()
        if max_new_tokens <= 0:
            return tokens
        logits, state = self.feed(tokens, self.initial_state())
        for i in range(max_new_tokens):
            nxt = int(logits.argmax())
            tokens.append(nxt)
            if nxt in stops or i == max_new_tokens - 1:
                break
            logits, state = self.feed([nxt], state)
        return tokens


def onnx_generate(
    out_dir: str | Path | OnnxRingan,
    prompt,
    max_new_tokens: int,
    stop_at_eos: bool = True,
    **conditioning,
) -> str | list[int]:
    """Greedy generation with ONNX Runtime from an `export_onnx` folder (or a ready `OnnxRingan`).

    Args:
        out_dir: the folder `export_onnx` wrote, or an `OnnxRingan` to reuse its sessions.
        prompt: text (tokenized with the folder's tokenizer), or ids: a list, or an array/tensor of shape `[T]`
            or `[1, T]`.
        max_new_tokens: tokens to generate at most.
        stop_at_eos: stop at the end of the turn (`</s>` or a newline token), as `model.generate` does with the
            saved generation config.
        conditioning: the model's conditioning inputs for batch 1, e.g. `topic_ids=2, context_ids=3`
            (`conditioning="ids"`) or `topic_input_ids=[...]`, `context_input_ids=[...]` (`conditioning="text"`).

    Returns:
        for a text prompt, the generated text (the reply, without the prompt); for ids, the prompt's ids followed
        by the generated ones.
    """
    runner = out_dir if isinstance(out_dir, OnnxRingan) else OnnxRingan(out_dir)
    if not isinstance(prompt, str):
        return runner.generate(prompt, max_new_tokens, stop_at_eos, **conditioning)
    from transformers import AutoTokenizer

    from ..tokenization import encode_text

    tokenizer = AutoTokenizer.from_pretrained(runner.out_dir)
    ids = encode_text(tokenizer, prompt, add_special_tokens=False)["input_ids"]
    tokens = runner.generate(ids, max_new_tokens, stop_at_eos, **conditioning)
    return tokenizer.decode(tokens[len(ids) :], skip_special_tokens=True).strip()


__all__ = ["OnnxRingan", "RinganOnnxStep", "export_onnx", "onnx_generate"]
