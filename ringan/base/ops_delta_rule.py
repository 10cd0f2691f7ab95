"""Chunkwise-parallel and recurrent kernels for the (gated) delta rule (pure PyTorch).

The recurrence, per batch row and head (DeltaNet; Gated DeltaNet with a decay)::

    S_t = exp(g_t) * S_{t-1} + beta_t * k_t (v_t - exp(g_t) * S_{t-1}^T k_t)^T      (S: d_k x d_v, fp32)
    o_t = S_t^T q_t

i.e. the state first decays, then the value stored under key `k_t` is moved a share `beta_t` of the way to
`v_t`. With unit-norm keys and `0 < beta_t < 1`, `S` stays bounded at any length. `g_t <= 0` is a log-decay
(absent for plain DeltaNet). The sequential reference lives in ``naive.py`` (tests only).

Chunkwise form (the WY / UT-transform representation of Yang et al., "Parallelizing Linear Transformers with
the Delta Rule over Sequence Length"): inside a chunk, with `b_i` the cumulative log-decay from the chunk start
(every exponent below is `b_i - b_j` with `j <= i`, or `b_i`, so all are <= 0), the written values `u_i` solve
a unit lower-triangular system::

    (I + L) U = V_beta - (K_beta * exp(b)) S_0,    L_ij = beta_i exp(b_i - b_j) k_i . k_j   (j < i)

so `U = U' - W S_0` with `[U', W] = (I + L)^-1 [V_beta, K_beta * exp(b)]`, solved once for all chunks in one
batched triangular solve. Only `U = U' - W S` and the state update run chunk by chunk.
"""

from __future__ import annotations

import torch


def chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_decay: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
    solve_chunk=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel (gated) delta rule.

    Args:
        q, k: `[batch, heads, seq, d_k]` (k should have unit norm for a bounded state).
        v: `[batch, heads, seq, d_v]`.
        beta: `[batch, heads, seq]`, the writing strength in (0, 1); 0 at padding.
        log_decay: `[batch, heads, seq]` (<= 0; 0 at padding), or `None` for no decay (DeltaNet).
        initial_state: `[batch, heads, d_k, d_v]` fp32, or `None` for zeros.
        chunk_size: tokens per chunk.
        solve_chunk: `fn(L, rhs) -> (I + L)^-1 rhs` for strictly lower-triangular `L`; default: a batched
            triangular solve (the ONNX export passes a loop-free one).

    Returns:
        `(output [batch, heads, seq, d_v] in q's dtype, final_state [batch, heads, d_k, d_v] fp32)`.
    """
    out_dtype = q.dtype
    batch, heads, seq_len, d_k = q.shape
    d_v = v.shape[-1]
    q, k, v, beta = q.float(), k.float(), v.float(), beta.float()
    state = q.new_zeros(batch, heads, d_k, d_v) if initial_state is None else initial_state.float()
    if seq_len == 0:
        return q.new_zeros(batch, heads, 0, d_v, dtype=out_dtype), state
    pad = (-seq_len) % chunk_size
    if pad:  # padded tail: k = 0 and beta = 0 write nothing, g = 0 decays nothing
        q, k, v = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        beta = torch.nn.functional.pad(beta, (0, pad))
        if log_decay is not None:
            log_decay = torch.nn.functional.pad(log_decay.float(), (0, pad))
    n_chunks = (seq_len + pad) // chunk_size
    # [B, H, T, D] -> [B, H, N, C, D]
    q = q.view(batch, heads, n_chunks, chunk_size, d_k)
    k = k.view(batch, heads, n_chunks, chunk_size, d_k)
    v = v.view(batch, heads, n_chunks, chunk_size, d_v)
    beta = beta.view(batch, heads, n_chunks, chunk_size, 1)

    inclusive = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
    strict = inclusive.tril(-1)
    scores = q @ k.transpose(-1, -2)  # [B, H, N, C, C]
    key_overlap = beta * (k @ k.transpose(-1, -2))  # beta_i k_i . k_j
    if log_decay is None:
        q_inter, rhs_keys, k_out, chunk_decay = q, k * beta, k, None
    else:
        b = log_decay.float().view(batch, heads, n_chunks, chunk_size).cumsum(-1)  # [B, H, N, C], <= 0
        b_last = b[..., -1:]
        pair = (b.unsqueeze(-1) - b.unsqueeze(-2)).masked_fill(~inclusive, float("-inf")).exp()  # exp(b_i - b_j)
        scores = scores * pair
        key_overlap = key_overlap * pair
        q_inter = q * b.exp().unsqueeze(-1)
        rhs_keys = k * beta * b.exp().unsqueeze(-1)
        k_out = k * (b_last - b).exp().unsqueeze(-1)  # what each key still weighs at the chunk end
        chunk_decay = b_last.exp().unsqueeze(-1)  # [B, H, N, 1, 1]
    lower = key_overlap.masked_fill(~strict, 0.0)
    scores = scores.masked_fill(~inclusive, 0.0)
    rhs = torch.cat([v * beta, rhs_keys], dim=-1)  # [B, H, N, C, Dv + Dk]
    if solve_chunk is None:
        solved = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)  # (I + L)^-1 rhs
    else:
        solved = solve_chunk(lower, rhs)
    u_free, w = solved.split([d_v, d_k], dim=-1)  # U' [.., C, Dv], W [.., C, Dk]

    # The sequential part: each chunk's written values depend on the incoming state (unbind, not indexing,
    # keeps autograd's backward linear in N).
    incoming, written = [], []
    decays = chunk_decay.unbind(2) if chunk_decay is not None else None
    for n, (u_n, w_n, k_n) in enumerate(zip(u_free.unbind(2), w.unbind(2), k_out.unbind(2))):
        incoming.append(state)
        u = u_n - w_n @ state  # [B, H, C, Dv]
        written.append(u)
        update = k_n.transpose(-1, -2) @ u
        state = state * decays[n] + update if decays is not None else state + update
    out = q_inter @ torch.stack(incoming, dim=2) + scores @ torch.stack(written, dim=2)
    out = out.view(batch, heads, n_chunks * chunk_size, d_v)[:, :, :seq_len]
    return out.to(out_dtype), state


def solve_unit_lower_by_doubling(lower: torch.Tensor, rhs: torch.Tensor, max_size: int | None = None) -> torch.Tensor:
    """`(I + L)^-1 rhs` for strictly lower-triangular `L` `[..., C, C]` without a loop over rows or a solver op
    (for exported graphs): `L` is nilpotent, so `(I + L)^-1 = (I - L)(I + L^2)(I + L^4)...` with
    `ceil(log2 C)` factors. Exact up to rounding. `max_size` fixes the factor count for any `C <= max_size`
    (a graph with a dynamic chunk length)."""
    size = max_size or lower.shape[-1]
    power = -lower
    out = rhs + power @ rhs
    steps = max(int(size - 1).bit_length(), 1)
    for _ in range(steps - 1):
        power = power @ power
        out = out + power @ out
    return out


def solve_unit_lower_blockwise(lower: torch.Tensor, rhs: torch.Tensor, max_size: int, block: int = 8) -> torch.Tensor:
    """`(I + L)^-1 rhs` like `solve_unit_lower_by_doubling`, stable for any `C <= max_size`: zero-padded to a whole
    number of `block`-row blocks, block forward substitution, doubling only inside each small diagonal block. The
    product form alone loses float32 accuracy past ~20 rows when keys are alike (entries of `L` near 1, as a
    shared topic/context vector makes them): its powers of `L` grow like binomial coefficients before cancelling."""
    size = lower.shape[-1]
    padded = -(-max_size // block) * block
    lower = torch.nn.functional.pad(lower, (0, padded - size, 0, padded - size))
    rhs = torch.nn.functional.pad(rhs, (0, 0, 0, padded - size))
    solved: list[torch.Tensor] = []
    for start in range(0, padded, block):  # a fixed count: the exported graph has no loop
        rows = slice(start, start + block)
        part = rhs[..., rows, :]
        if solved:
            part = part - lower[..., rows, :start] @ torch.cat(solved, dim=-2)
        solved.append(solve_unit_lower_by_doubling(lower[..., rows, rows], part, max_size=block))
    return torch.cat(solved, dim=-2)[..., :size, :]


def recurrent_delta_rule_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    log_decay: torch.Tensor | None,
    state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of the recurrence, for generation.

    Args:
        q, k: `[batch, heads, d_k]`; v: `[batch, heads, d_v]`; beta: `[batch, heads]`.
        log_decay: `[batch, heads]` (<= 0), or `None`.
        state: `[batch, heads, d_k, d_v]` fp32.

    Returns:
        `(output [batch, heads, d_v] in q's dtype, new_state fp32)`.
    """
    out_dtype = q.dtype
    q, k, v, beta = q.float(), k.float(), v.float(), beta.float()
    if log_decay is not None:
        state = state * log_decay.float().exp()[..., None, None]
    stored = (k.unsqueeze(-2) @ state).squeeze(-2)  # S^T k: what the key reads now, [B, H, Dv]
    written = beta.unsqueeze(-1) * (v - stored)
    state = torch.addcmul(state, k.unsqueeze(-1), written.unsqueeze(-2))
    out = (q.unsqueeze(-2) @ state).squeeze(-2)
    return out.to(out_dtype), state
