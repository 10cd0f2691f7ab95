"""Quadratic reference implementations, for tests only: slow, obvious and in float64.

Every fast path in ``linear_attention.py`` must match these.
"""

from __future__ import annotations

import torch

from .linear_attention import recurrent_linear_attention_step


def naive_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """o_t = sum_{s<=t} exp(G_t - G_s) (q_t . k_s) v_s + exp(G_t) q_t^T S_0, with G = cumsum(g)."""
    batch, heads, seq_len, _ = q.shape
    q, k, v = q.double(), k.double(), v.double()
    if log_decay is None:
        log_decay = q.new_zeros(batch, heads, seq_len)
    elif log_decay.dim() == 1:
        log_decay = log_decay.view(1, heads, 1).expand(batch, heads, seq_len)
    cum = log_decay.double().cumsum(-1)  # [B, H, T]
    rel = cum.unsqueeze(-1) - cum.unsqueeze(-2)  # G_t - G_s
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=q.device).tril()
    weights = (q @ k.transpose(-1, -2)) * rel.masked_fill(~causal, float("-inf")).exp()
    out = weights @ v
    state = (k * (cum[..., -1:] - cum).exp().unsqueeze(-1)).transpose(-1, -2) @ v
    if initial_state is not None:
        s0 = initial_state.double()
        out = out + cum.exp().unsqueeze(-1) * (q @ s0)
        state = state + cum[..., -1:].exp().unsqueeze(-1) * s0
    return out, state


def recurrent_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The decode step applied token by token (the generation path, looped for comparison)."""
    batch, heads, seq_len, d_k = q.shape
    state = q.new_zeros(batch, heads, d_k, v.shape[-1], dtype=torch.float32) if initial_state is None else initial_state
    outs = []
    for t in range(seq_len):
        g = None
        if log_decay is not None:
            g = log_decay if log_decay.dim() == 1 else log_decay[:, :, t]
        o, state = recurrent_linear_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], g, state)
        outs.append(o)
    return torch.stack(outs, dim=2), state
