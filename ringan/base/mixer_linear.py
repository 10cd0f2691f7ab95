"""Linear attention mixers: `linear` (the founding document's elu+1 feature map with its normaliser),
`retention` (fixed per-head decay) and `gated` (data-dependent per-head decay), each with RoPE on q and k."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_ringan import RinganConfig
from .modules import RinganRMSNorm, RinganShortConvolution, apply_rotary
from .ops_linear_attention import chunk_linear_attention, recurrent_linear_attention_step


class RinganLinearAttention(nn.Module):
    """`S_t = exp(g_t) S_{t-1} + k_t v_t^T`, `o_t = q_t^T S_t` (see `ops_linear_attention.py`).

    - `linear`: `phi = elu + 1` on q and k, RoPE in the numerator only (RoFormer section 3.3), divided by the
      normaliser `phi(q_t) . sum_s phi(k_s)`; no decay.
    - `retention`: q scaled by `d**-0.5`, a fixed decay per head, no normaliser, a per-head RMSNorm on the output.
    - `gated`: as retention with a data-dependent decay `logsigmoid(W x) / gate_logit_normalizer`.

    The per-layer state is a dict: `state` `[B, H, d, d]` fp32, for `linear` also `normalizer` `[B, H, d]`, and
    with a short convolution `conv` `[B, 3 * hidden, conv_size - 1]`.
    """

    def __init__(self, config: RinganConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.attention_type = config.attention_type
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.chunk_size = config.chunk_size
        self.use_rope = config.use_rope
        self.gate_logit_normalizer = config.gate_logit_normalizer
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, hidden, bias=False)
        self.v_proj = nn.Linear(hidden, hidden, bias=False)
        self.o_proj = nn.Linear(hidden, hidden, bias=False)
        self.conv = RinganShortConvolution(3 * hidden, config.conv_size) if config.conv_size else None
        if self.attention_type == "retention":
            self.register_buffer(
                "log_decay", torch.tensor(config.retention_log_decays, dtype=torch.float32), persistent=False
            )
        if self.attention_type == "gated":
            self.decay_proj = nn.Linear(hidden, self.num_heads, bias=True)
        # Without a denominator an output normalisation is mandatory; "linear" keeps its classic normaliser.
        self.out_norm = RinganRMSNorm(self.head_dim, config.rms_norm_eps) if self.attention_type != "linear" else None
        self.gate_proj = nn.Linear(hidden, hidden, bias=False) if config.use_output_gate else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        token_mask: torch.Tensor | None = None,
        state: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch, seq_len, _ = hidden_states.shape
        state = state or {}
        new_state: dict[str, torch.Tensor] = {}
        qkv = torch.cat([self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)], -1)
        if self.conv is not None:
            qkv, new_state["conv"] = self.conv(qkv, token_mask, state.get("conv"))
        # [B, T, 3 * H * D] -> 3 x [B, H, T, D]
        q, k, v = qkv.view(batch, seq_len, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        mask = token_mask[:, None, :, None].to(k.dtype) if token_mask is not None else None  # [B, 1, T, 1]

        if self.attention_type == "linear":
            phi_q, phi_k = F.elu(q) + 1.0, F.elu(k) + 1.0
            if mask is not None:
                phi_k = phi_k * mask  # padding adds nothing to the state or the normaliser
            q_num, k_num = (
                (apply_rotary(phi_q, cos, sin), apply_rotary(phi_k, cos, sin)) if self.use_rope else (phi_q, phi_k)
            )
            numerator, new_state["state"] = self._attend(q_num, k_num, v, None, state.get("state"))
            z = phi_k.float().cumsum(2)  # [B, H, T, D]
            if "normalizer" in state:
                z = z + state["normalizer"].unsqueeze(2)
            denominator = (phi_q.float() * z).sum(-1, keepdim=True)
            out = (numerator.float() / (denominator + 1e-6)).to(v.dtype)
            new_state["normalizer"] = z[:, :, -1]
        else:
            q = q * self.head_dim**-0.5
            if self.use_rope:
                q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            if mask is not None:
                k = k * mask
            if self.attention_type == "retention":
                log_decay = self.log_decay
                if token_mask is not None:  # [H] -> [B, H, T]: padding must not decay the state
                    log_decay = log_decay[None, :, None] * token_mask[:, None, :].float()
            else:
                # [B, T, H] -> [B, H, T]; logsigmoid keeps every exponent <= 0
                log_decay = (
                    F.logsigmoid(self.decay_proj(hidden_states).float()) / self.gate_logit_normalizer
                ).transpose(1, 2)
                if token_mask is not None:
                    log_decay = log_decay * token_mask[:, None, :].float()  # padding neither decays nor adds
            out, new_state["state"] = self._attend(q, k, v, log_decay, state.get("state"))

        out = out.transpose(1, 2)  # [B, T, H, D]
        if self.out_norm is not None:
            out = self.out_norm(out)
        out = out.reshape(batch, seq_len, self.num_heads * self.head_dim)
        if self.gate_proj is not None:
            out = out * F.silu(self.gate_proj(hidden_states))
        return self.o_proj(out), new_state

    def _attend(self, q, k, v, log_decay, state):
        if q.shape[2] == 1 and state is not None:  # the lean decode step
            step_decay = log_decay[:, :, 0] if log_decay is not None and log_decay.dim() == 3 else log_decay
            out, state = recurrent_linear_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], step_decay, state)
            return out.unsqueeze(2), state
        return chunk_linear_attention(q, k, v, log_decay, state, chunk_size=self.chunk_size)
