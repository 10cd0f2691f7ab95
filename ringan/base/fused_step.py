"""A hand-fused one-token decode step for the delta-rule mixers (`delta`, `gated_delta`, the default).

At batch 1 a Ringan step is ~5 MFLOP, so its time is set by how many operators run, not by arithmetic: the
general forward makes 880 ATen calls a token (nested calls counted: reshapes, masks, per-projection matmuls, a
mkldnn convolution for a 4-tap window). `FusedDeltaStep` computes the same step with 662 and fewer, larger
matmuls (on Ringan-base, side by side in one process: 1.6x faster in fp32, 2x in int8):

- the q/k/v/output-gate projections of a layer are one matmul, beta and the decay one more, the MLP's gate and
  up one (weights concatenated once; int8 codes and their scales are concatenated as they are, so quantized
  weights stay quantized and run in the same int8 kernel);
- the short convolution's step is one dot product over its cached window; RoPE angles are computed once per
  step for both layers; q and k are normalised and rotated together.

`RinganForCausalLM.forward` uses it for a one-token call with a cache and no gradients (every `generate` step)
and rebuilds it when a weight changes. It is the same math as `RinganDeltaNet.forward` with one token and a
cache, checked against it in `tests/test_fused_step.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .modules import RinganShortConvolution
from .quantization import _INT8_MM, QuantizedLinear

FUSED_MIXERS = ("delta", "gated_delta")


class _Projection:
    """Several linear layers that read the same input, run as one matmul: `[..., in] -> [..., sum(out)]`."""

    def __init__(self, layers: list[nn.Module]):
        self.layers = layers
        self.weight = self.bias = self.codes = self.scales = None
        if all(isinstance(m, nn.Linear) for m in layers):
            self.weight = torch.cat([m.weight.detach() for m in layers]).contiguous()
            if any(m.bias is not None for m in layers):
                self.bias = torch.cat(
                    [m.bias.detach() if m.bias is not None else m.weight.new_zeros(m.out_features) for m in layers]
                )
        elif all(isinstance(m, QuantizedLinear) for m in layers) and _INT8_MM is not None:
            kernels = [m._kernel_inputs() if m.bits == 8 else None for m in layers]
            if all(k is not None for k in kernels):  # int8 with per-row scales: codes and scales concatenate
                self.codes = torch.cat([k[0] for k in kernels]).contiguous()
                self.scales = torch.cat([k[1] for k in kernels]).contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is not None:
            return F.linear(x, self.weight, self.bias)
        if self.codes is not None:  # bf16 activations: torch's fast int8 path
            out = _INT8_MM(x.reshape(-1, x.shape[-1]).to(torch.bfloat16), self.codes, self.scales)
            return out.to(x.dtype).view(*x.shape[:-1], -1)
        return torch.cat([m(x) for m in self.layers], dim=-1)  # int4 or grouped scales: each layer's own kernel


class FusedDeltaLayer:
    """One decoder layer's one-token step (mixer and MLP), its weights concatenated from `layer` at construction."""

    def __init__(self, layer: nn.Module):
        attn, mlp = layer.self_attn, layer.mlp
        self.input_norm, self.post_norm = layer.input_layernorm, layer.post_attention_layernorm
        self.heads, self.head_dim, self.hidden = attn.num_heads, attn.head_dim, attn.num_heads * attn.head_dim
        self.gated_output = attn.gate_proj is not None
        self.in_proj = _Projection([attn.q_proj, attn.k_proj, attn.v_proj] + ([attn.gate_proj] * self.gated_output))
        gates = [attn.beta_proj] + ([attn.decay_proj] if attn.attention_type == "gated_delta" else [])
        self.gate_proj = _Projection(gates)
        self.neg_a = -attn.A_log.detach().float().exp() if attn.attention_type == "gated_delta" else None
        conv: RinganShortConvolution | None = attn.conv
        self.conv_weight = conv.weight.detach()[:, 0, :] if conv is not None else None  # [3 * hidden, K]
        self.use_rope = attn.use_rope
        self.out_norm, self.o_proj = attn.out_norm, attn.o_proj
        self.mlp_in = _Projection([mlp.gate_proj, mlp.up_proj] if mlp.gate_proj is not None else [mlp.up_proj])
        self.mlp_gated, self.act, self.down_proj = mlp.gate_proj is not None, mlp.act, mlp.down_proj

    def __call__(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, state: dict) -> torch.Tensor:
        """x: `[B, 1, hidden]` (3-D, so that an exported graph has MatMuls, which ONNX Runtime's quantizers
        take, not Gemms); cos, sin: `[B, 1, 1, D]`; state: the layer's cache dict, whose tensors are replaced."""
        batch, heads, dim = x.shape[0], self.heads, self.head_dim
        h = self.input_norm(x)
        projected = self.in_proj(h)  # [B, 1, 3 * hidden (+ hidden for the output gate)]
        qkv = projected[..., : 3 * self.hidden]
        if self.conv_weight is not None:  # the window: the cached last K - 1 inputs and this one
            conv = state["conv"]
            window = torch.cat([conv, qkv.transpose(1, 2).to(conv.dtype)], dim=-1)  # [B, 3C, K]
            state["conv"] = window[..., 1:]
            qkv = torch.linalg.vecdot(window, self.conv_weight.to(window.dtype)).to(x.dtype)  # [B, 3C]
        qkv = F.silu(qkv).view(batch, 3, heads, dim)  # [B, 3 * H * D] -> [B, 3, H, D]
        qk = F.normalize(qkv[:, :2].float(), dim=-1)  # [B, 2, H, D]: q and k, unit length
        if self.use_rope:  # rotate-half RoPE for q and k at once: [B, 2, H, D] * [B, 1, 1, D]
            half = dim // 2
            qk = qk * cos + torch.cat((qk[..., half:], qk[..., :half]), dim=-1) * sin
        q, k, v = qk[:, 0] * dim**-0.5, qk[:, 1], qkv[:, 2].float()  # [B, H, D] each

        gates = self.gate_proj(h).float().view(batch, -1)  # [B, H] beta logits (+ [B, H] decay logits)
        beta = torch.sigmoid(gates[:, :heads])
        s = state["state"]  # [B, H, D, D] fp32
        if self.neg_a is not None:
            s = s * torch.exp(self.neg_a * F.softplus(gates[:, heads:]))[..., None, None]
        stored = torch.matmul(k.unsqueeze(-2), s)  # S^T k: [B, H, 1, D]
        written = (v.unsqueeze(-2) - stored) * beta[..., None, None]
        s = torch.baddbmm(  # S + k (beta (v - S^T k))^T, as [B * H] outer products
            s.reshape(batch * heads, dim, dim), k.reshape(batch * heads, dim, 1), written.view(batch * heads, 1, dim)
        ).view(batch, heads, dim, dim)
        state["state"] = s
        out = torch.matmul(q.unsqueeze(-2), s).view(batch, heads, dim)  # [B, H, D]

        out = self.out_norm(out.to(x.dtype)).view(batch, 1, self.hidden)
        if self.gated_output:
            out = out * F.silu(projected[..., 3 * self.hidden :])
        x = x + self.o_proj(out)
        up = self.mlp_in(self.post_norm(x))
        if self.mlp_gated:
            gate, up = up.chunk(2, dim=-1)
            up = self.act(gate) * up
        else:
            up = self.act(up)
        return x + self.down_proj(up)


class FusedDeltaStep:
    """`step(tokens [B], cache) -> logits [B, V] fp32` for a delta-rule `RinganForCausalLM`, continuing (and
    updating) a `RinganCache`. The caller checks the inputs (`RinganForCausalLM.forward` does)."""

    def __init__(self, model: nn.Module):
        config = model.config
        if config.attention_type not in FUSED_MIXERS:
            raise ValueError(f"the fused step covers {FUSED_MIXERS}, not {config.attention_type!r}")
        base = model.model
        self.embed, self.norm, self.lm_head, self.rotary = base.embed_tokens, base.norm, model.lm_head, base.rotary_emb
        self.conditioning = base.conditioning
        self.layers = [FusedDeltaLayer(layer) for layer in base.layers]
        self.use_rope = config.use_rope
        self.key = weights_key(model)

    def __call__(self, tokens: torch.Tensor, cache) -> torch.Tensor:
        batch = tokens.shape[0]
        x = self.embed(tokens[:, None])  # [B, 1, hidden]
        condition = cache.condition if cache.condition is not None else self.conditioning.unknown(batch)
        if condition is not None:
            x = x + condition.to(x.dtype)
        cos = sin = None
        if self.use_rope:  # [B, 1, 1, D]: the next position of each row
            cos, sin = self.rotary(cache.seen_tokens[:, None])
        for i, layer in enumerate(self.layers):
            state = dict(cache.states[i])
            x = layer(x, cos, sin, state)
            cache.states[i] = state
        cache.seen_tokens = cache.seen_tokens + 1
        return self.lm_head(self.norm(x))[:, 0].float()


def weights_key(model: nn.Module) -> tuple:
    """Identifies the decoder layers' current weights (each tensor's object, storage and in-place version), so a
    step built from other weights is rebuilt: after training, `load_state_dict`, `.to()`, quantization. The
    embedding, final norm and head are called as they are and need no key."""
    return tuple(
        (id(t), t.data_ptr(), t._version)
        for module in model.model.layers.modules()
        for t in (*module._parameters.values(), *module._buffers.values())
        if t is not None  # a bias-free Linear holds bias=None
    )
