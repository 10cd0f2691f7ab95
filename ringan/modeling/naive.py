"""Reference implementations for tests only: slow, obvious, float64, and independent of the production code.

Nothing here imports `ops_*.py`, `modules.py` or the mixers: the kernels are checked against

- `naive_linear_attention`: the quadratic form `o_t = sum_{s<=t} exp(G_t - G_s) (q_t . k_s) v_s`;
- `naive_delta_rule`: the recurrence in its product form `S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T`;

and a whole mixer layer (`naive_mixer`) is recomputed from its weights alone: projections, the short
convolution as an explicit sum over taps, RoPE as explicit 2x2 rotations at each token's own position, feature
maps, the normaliser, the decays, the output norm and gate. A fast path that drops any of these disagrees.
"""

from __future__ import annotations

import math

import torch


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


def naive_recurrent_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same recurrence token by token: `S_t = exp(g_t) S_{t-1} + k_t v_t^T`, `o_t = S_t^T q_t`."""
    batch, heads, seq_len, d_k = q.shape
    q, k, v = q.double(), k.double(), v.double()
    state = q.new_zeros(batch, heads, d_k, v.shape[-1]) if initial_state is None else initial_state.double()
    outs = []
    for t in range(seq_len):
        if log_decay is not None:
            g = log_decay.double().view(1, heads) if log_decay.dim() == 1 else log_decay[:, :, t].double()
            state = state * g.exp()[..., None, None]
        state = state + torch.einsum("bhi,bhj->bhij", k[:, :, t], v[:, :, t])
        outs.append(torch.einsum("bhi,bhij->bhj", q[:, :, t], state))
    return torch.stack(outs, dim=2), state


def naive_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_decay: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T`, `o_t = S_t^T q_t`, token by token."""
    batch, heads, seq_len, d_k = q.shape
    q, k, v, beta = q.double(), k.double(), v.double(), beta.double()
    eye = torch.eye(d_k, dtype=torch.float64, device=q.device)
    state = q.new_zeros(batch, heads, d_k, v.shape[-1]) if initial_state is None else initial_state.double()
    outs = []
    for t in range(seq_len):
        k_t, b_t = k[:, :, t], beta[:, :, t, None, None]
        decay = 1.0 if log_decay is None else log_decay[:, :, t].double().exp()[..., None, None]
        erase = eye - b_t * torch.einsum("bhi,bhj->bhij", k_t, k_t)
        state = decay * (erase @ state) + b_t * torch.einsum("bhi,bhj->bhij", k_t, v[:, :, t])
        outs.append(torch.einsum("bhi,bhij->bhj", q[:, :, t], state))
    return torch.stack(outs, dim=2), state


# ------------------------------------------------------------------------------------- whole mixer layers


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.double()


def _rotate(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE as explicit rotations of the pairs (x_i, x_{i + d/2}) by angle position * theta^(-2i/d).
    x: [B, H, T, D]; positions: [B, T]."""
    half = x.shape[-1] // 2
    i = torch.arange(half, dtype=torch.float64)
    angle = positions.double()[:, None, :, None] * theta ** (-2.0 * i / x.shape[-1])  # [B, 1, T, D/2]
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * angle.cos() - second * angle.sin(), second * angle.cos() + first * angle.sin()], dim=-1)


def _short_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Causal depthwise convolution as a sum over taps: y_t = sum_j w_j x_{t - (K - 1) + j}. x: [B, T, C]."""
    size = weight.shape[-1]
    out = torch.zeros_like(x)
    for j in range(size):
        shift = size - 1 - j
        shifted = torch.nn.functional.pad(x, (0, 0, shift, 0))[:, : x.shape[1]]
        out = out + shifted * weight[:, 0, j].double()
    return out


@torch.no_grad()
def naive_mixer(
    mixer: torch.nn.Module,
    hidden_states: torch.Tensor,
    token_mask: torch.Tensor | None = None,
    rope_theta: float = 10000.0,
) -> torch.Tensor:
    """The output of a mixer layer (`RinganLinearAttention` or `RinganDeltaNet`), recomputed from its weights.

    Each row starts from an empty state; padding (`token_mask` 0) is removed, so the real tokens of a row sit at
    positions 0, 1, ... exactly as if the row were alone. Returns `[B, T, hidden]` float64 (0 at padding).
    """
    x_all = hidden_states.double()
    batch, seq_len, hidden = x_all.shape
    heads, dim = mixer.num_heads, mixer.head_dim
    kind = mixer.attention_type
    out_all = torch.zeros_like(x_all)
    for row in range(batch):
        keep = torch.ones(seq_len, dtype=torch.bool) if token_mask is None else token_mask[row].bool()
        x = x_all[row : row + 1, keep]  # [1, n, hidden]: the row alone
        n = x.shape[1]
        if n == 0:
            continue

        def proj(linear, inp=x):
            return inp @ linear.weight.double().T + (linear.bias.double() if linear.bias is not None else 0.0)

        qkv = torch.cat([proj(mixer.q_proj), proj(mixer.k_proj), proj(mixer.v_proj)], dim=-1)
        if mixer.conv is not None:
            qkv = _short_conv(qkv, mixer.conv.weight)
        if kind in ("delta", "gated_delta"):
            qkv = qkv * torch.sigmoid(qkv)  # SiLU
        q, k, v = (t.view(1, n, heads, dim).transpose(1, 2) for t in qkv.split(hidden, dim=-1))  # [1, H, n, D]
        positions = torch.arange(n)[None]

        def rope(t, positions=positions):
            return _rotate(t, positions, rope_theta) if mixer.use_rope else t

        if kind == "linear":
            phi_q = torch.where(q > 0, q + 1.0, torch.exp(q))  # elu + 1
            phi_k = torch.where(k > 0, k + 1.0, torch.exp(k))
            causal = torch.ones(n, n, dtype=torch.bool).tril()
            numerator = ((rope(phi_q) @ rope(phi_k).transpose(-1, -2)) * causal) @ v
            denominator = ((phi_q @ phi_k.transpose(-1, -2)) * causal).sum(-1, keepdim=True)
            o = numerator / (denominator + 1e-6)
        elif kind in ("retention", "gated"):
            q, k = rope(q / math.sqrt(dim)), rope(k)
            if kind == "retention":
                g = mixer.log_decay.double().view(1, heads, 1).expand(1, heads, n)
            else:
                g = torch.nn.functional.logsigmoid(proj(mixer.decay_proj)).transpose(1, 2) / mixer.gate_logit_normalizer
            cum = g.cumsum(-1)
            causal = torch.ones(n, n, dtype=torch.bool).tril()
            decay = (cum.unsqueeze(-1) - cum.unsqueeze(-2)).masked_fill(~causal, float("-inf")).exp()
            o = ((q @ k.transpose(-1, -2)) * decay) @ v
        else:
            q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12) / math.sqrt(dim)
            k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            q, k = rope(q), rope(k)
            beta = torch.sigmoid(proj(mixer.beta_proj)).transpose(1, 2)  # [1, H, n]
            g = None
            if kind == "gated_delta":
                softplus = torch.nn.functional.softplus(proj(mixer.decay_proj))
                g = (-mixer.A_log.double().exp() * softplus).transpose(1, 2)
            o, _ = naive_delta_rule(q, k, v, beta, g)
        o = o.transpose(1, 2)  # [1, n, H, D]
        if mixer.out_norm is not None:
            o = _rms_norm(o, mixer.out_norm.weight, mixer.out_norm.eps)
        o = o.reshape(1, n, hidden)
        if mixer.gate_proj is not None:
            gate = proj(mixer.gate_proj)
            o = o * gate * torch.sigmoid(gate)
        out_all[row, keep] = proj(mixer.o_proj, o)[0]
    return out_all
