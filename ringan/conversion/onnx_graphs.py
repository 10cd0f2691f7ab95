"""What `export_onnx` exports: the model's own layers wrapped as graphs with the recurrent state as explicit tensors
(`RinganOnnxStep` for prefill and decode, `RinganOnnxCondition` for the conversation's vector), and the temporary
patches that give the layers an exportable form (one chunk without a loop, fusable norms, MatMul-shaped linears,
projections shared between the prefill and decode graphs). The graphs' inputs and outputs are described in
`onnx_export`'s docstring."""

from __future__ import annotations

import contextlib
import types

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling import RinganForCausalLM
from ..modeling.fused_step import FusedDeltaLayer
from ..modeling.mixer_delta import RinganDeltaNet
from ..modeling.modules import RinganRMSNorm
from ..modeling.ops_delta_rule import chunk_delta_rule, solve_unit_lower_blockwise
from ..modeling.ops_linear_attention import chunk_linear_attention


def _segment_attend(self, q, k, v, log_decay, state):
    """`RinganLinearAttention._attend` for the prefill graph: the whole segment is one chunk (no loop, dynamic T)."""
    return chunk_linear_attention(q, k, v, log_decay, state, chunk_size=q.shape[2])


def _segment_attend_delta(self, q, k, v, beta, log_decay, state):
    """`RinganDeltaNet._attend` for the prefill graph: one chunk, its triangular solve loop-free and blockwise."""

    def solve(lower, rhs):
        return solve_unit_lower_blockwise(lower, rhs, max_size=self.chunk_size)

    return chunk_delta_rule(q, k, v, beta, log_decay, state, chunk_size=q.shape[2], solve_chunk=solve)


@contextlib.contextmanager
def one_chunk_attention(model: RinganForCausalLM):
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
def shared_projections(model: RinganForCausalLM, fused: list[FusedDeltaLayer]):
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


def fusable_norms(model: RinganForCausalLM):
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


def state_shapes(config) -> dict[str, tuple[int, ...]]:
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


class IdsCondition(RinganOnnxCondition):
    def forward(self, topic_ids, context_ids):
        return self.condition({"topic_ids": topic_ids, "context_ids": context_ids})


class TextCondition(RinganOnnxCondition):
    def forward(self, topic_input_ids, topic_attention_mask, context_input_ids, context_attention_mask):
        names = CONDITION_INPUTS["text"]
        return self.condition(
            dict(zip(names, (topic_input_ids, topic_attention_mask, context_input_ids, context_attention_mask)))
        )


def io_names(config) -> tuple[list[str], list[str]]:
    names = state_names(config)
    inputs = ["input_ids", "position", "condition", *names]
    outputs = ["logits", "position_out", *(f"{name}_out" for name in names)]
    return inputs, outputs


def example_inputs(config, seq_len: int) -> dict:
    layers = config.num_hidden_layers
    ids = torch.randint(4, max(config.vocab_size, 5), (1, seq_len))
    example = {"input_ids": ids, "position": torch.zeros(1, dtype=torch.long)}
    example["condition"] = torch.zeros(1, 1, config.hidden_size)
    example.update({name: torch.zeros(layers, *shape) for name, shape in state_shapes(config).items()})
    return example


def _linear_3d(self, x: torch.Tensor) -> torch.Tensor:
    """`nn.Linear.forward` through a 3-D view: exported as MatMul (which ORT's weight quantizers take), not Gemm."""
    return F.linear(x[None], self.weight, self.bias)[0]


def matmul_linears(modules: list[nn.Module]):
    """Temporarily route the linear layers among `modules` through `_linear_3d`: the conditioning projections act
    on a pooled `[1, hidden]` vector, which would export as Gemm and stay in float in a quantized export."""
    return _instance_forwards([m for m in modules if isinstance(m, nn.Linear)], _linear_3d)


CONDITION_GRAPHS = {"ids": IdsCondition, "text": TextCondition}
