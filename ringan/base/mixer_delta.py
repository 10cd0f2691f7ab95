"""Delta-rule mixers: `delta` (DeltaNet, Yang et al. 2024) and `gated_delta` (Gated DeltaNet, Yang, Kautz and
Hatamizadeh, ICLR 2025), with a short convolution on q/k/v, L2-normalised q and k, optional RoPE, and a per-head
output norm with a swish output gate."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_ringan import RinganConfig
from .modules import RinganRMSNorm, RinganShortConvolution, apply_rotary
from .ops_delta_rule import chunk_delta_rule, recurrent_delta_rule_step


class RinganDeltaNet(nn.Module):
    """`S_t = a_t S_{t-1} + beta_t k_t (v_t - a_t S_{t-1}^T k_t)^T`, `o_t = S_t^T q_t` (see `ops_delta_rule.py`).

    - `beta_t = sigmoid(W_beta x_t)` per head: how far the value stored under `k_t` moves towards `v_t`.
    - `gated_delta`: `log a_t = -exp(A_log) * softplus(W_a x_t + dt_bias)` per head (Mamba2's parametrisation;
      every exponent <= 0); `delta`: `a_t = 1`.
    - q, k: SiLU after the short convolution, then L2-normalised per head (q also scaled by `d**-0.5`); RoPE
      rotates both after the normalisation (a rotation keeps the unit norm the delta rule needs).

    The per-layer state is a dict: `state` `[B, H, d, d]` fp32 and, with a short convolution, `conv`
    `[B, 3 * hidden, conv_size - 1]`.
    """

    def __init__(self, config: RinganConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.attention_type = config.attention_type
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.chunk_size = config.chunk_size
        self.use_rope = config.use_rope
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, hidden, bias=False)
        self.v_proj = nn.Linear(hidden, hidden, bias=False)
        self.o_proj = nn.Linear(hidden, hidden, bias=False)
        self.beta_proj = nn.Linear(hidden, self.num_heads, bias=True)
        self.conv = RinganShortConvolution(3 * hidden, config.conv_size, "silu") if config.conv_size else None
        if self.attention_type == "gated_delta":
            self.decay_proj = nn.Linear(hidden, self.num_heads, bias=True)  # its bias is Mamba2's dt_bias
            self.A_log = nn.Parameter(torch.zeros(self.num_heads))
        self.out_norm = RinganRMSNorm(self.head_dim, config.rms_norm_eps)
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
        else:
            qkv = F.silu(qkv)
        # [B, T, 3 * H * D] -> 3 x [B, H, T, D]
        q, k, v = qkv.view(batch, seq_len, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q = F.normalize(q.float(), dim=-1) * self.head_dim**-0.5
        k = F.normalize(k.float(), dim=-1)
        if self.use_rope:
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        beta = torch.sigmoid(self.beta_proj(hidden_states).float()).transpose(1, 2)  # [B, T, H] -> [B, H, T]
        log_decay = None
        if self.attention_type == "gated_delta":
            log_decay = (-self.A_log.float().exp() * F.softplus(self.decay_proj(hidden_states).float())).transpose(1, 2)
        if token_mask is not None:  # padding neither writes, nor erases, nor decays
            keep = token_mask[:, None, :].float()  # [B, 1, T]
            k = k * keep.unsqueeze(-1)
            beta = beta * keep
            log_decay = log_decay * keep if log_decay is not None else None

        out, new_state["state"] = self._attend(q, k, v, beta, log_decay, state.get("state"))
        out = self.out_norm(out.transpose(1, 2).to(hidden_states.dtype))  # [B, T, H, D], normalised per head
        out = out.reshape(batch, seq_len, self.num_heads * self.head_dim)
        if self.gate_proj is not None:
            out = out * F.silu(self.gate_proj(hidden_states))
        return self.o_proj(out), new_state

    def _attend(self, q, k, v, beta, log_decay, state):
        if q.shape[2] == 1 and state is not None:  # the lean decode step
            step_decay = log_decay[:, :, 0] if log_decay is not None else None
            out, state = recurrent_delta_rule_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], beta[:, :, 0], step_decay, state)
            return out.unsqueeze(2), state
        return chunk_delta_rule(q, k, v, beta, log_decay, state, self.chunk_size)
