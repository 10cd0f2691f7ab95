"""Chunkwise-parallel and recurrent kernels for decayed linear attention (pure PyTorch).

One recurrence covers every attention type of Ringan, per batch row and head::

    S_t = exp(g_t) * S_{t-1} + k_t v_t^T        (S: d_k x d_v, fp32)
    o_t = q_t^T S_t

``g_t <= 0`` is a log-decay: a constant ``log(gamma_h)`` for retention, a data-dependent value for
the gated form, and absent (no decay) for classic linear attention. The quadratic reference lives in
``naive.py`` (tests only); every function here must match it.

Numerics (see the project's research notes): the state and all cumulative decays are kept in fp32,
and decays are accumulated *within* a chunk only, so every exponent is <= 0 and nothing overflows at
any length.
"""

from __future__ import annotations

import importlib
import os

import torch


def _find_fla_kernel():
    """flash-linear-attention's Triton kernel, when installed (optional, CUDA, inference). Imported by name so that
    checkpoints shipping this file never require it; RINGAN_DISABLE_FLA=1 forces the pure-PyTorch path."""
    if os.environ.get("RINGAN_DISABLE_FLA"):
        return None
    try:
        return importlib.import_module("fla.ops.simple_gla").chunk_simple_gla
    except Exception:  # noqa: BLE001  (not installed, or no Triton/GPU)
        return None


_FLA_KERNEL = _find_fla_kernel()  # resolved once, at import


def fla_linear_attention(q, k, v, log_decay, initial_state):
    """The same recurrence on fla's `chunk_simple_gla` (layout [B, T, H, D], scale 1, fp32 state)."""
    kernel = _FLA_KERNEL
    batch, heads, seq_len, _ = q.shape
    if log_decay is None:
        log_decay = q.new_zeros(batch, heads, seq_len, dtype=torch.float32)
    elif log_decay.dim() == 1:
        log_decay = log_decay.float().view(1, heads, 1).expand(batch, heads, seq_len)
    out, state = kernel(
        q.transpose(1, 2).contiguous(),
        k.transpose(1, 2).contiguous(),
        v.transpose(1, 2).contiguous(),
        g=log_decay.float().transpose(1, 2).contiguous(),
        scale=1.0,
        initial_state=None if initial_state is None else initial_state.float(),
        output_final_state=True,
    )
    return out.transpose(1, 2), state.float()


def chunk_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel form: intra-chunk work as batched matmuls, the state carried chunk by chunk.

    Args:
        q, k: `[batch, heads, seq, d_k]`.
        v: `[batch, heads, seq, d_v]`.
        log_decay: `[batch, heads, seq]` or `[heads]` (constant per head), values <= 0; `None` for no decay.
        initial_state: `[batch, heads, d_k, d_v]` fp32, or `None` for zeros.
        chunk_size: tokens per chunk; memory is O(seq * chunk_size), never O(seq * d_k * d_v).

    Returns:
        `(output [batch, heads, seq, d_v] in q's dtype, final_state [batch, heads, d_k, d_v] fp32)`.
    """
    # fla for inference only: its backward for gated decays refuses Triton < 3.7.1 on Hopper (fla issue #640)
    if q.is_cuda and q.shape[2] > 0 and not torch.is_grad_enabled() and _FLA_KERNEL is not None:
        return fla_linear_attention(q, k, v, log_decay, initial_state)
    out_dtype = q.dtype
    batch, heads, seq_len, d_k = q.shape
    d_v = v.shape[-1]
    q, k, v = q.float(), k.float(), v.float()
    state = q.new_zeros(batch, heads, d_k, d_v) if initial_state is None else initial_state.float()
    if seq_len == 0:
        return q.new_zeros(batch, heads, 0, d_v, dtype=out_dtype), state
    pad = (-seq_len) % chunk_size
    # retention without padding: the same decays in every chunk (a ragged last chunk needs the general path,
    # where the padded tail neither decays nor adds)
    constant_decay = log_decay is not None and log_decay.dim() == 1 and pad == 0
    if log_decay is not None and log_decay.dim() == 1 and pad:
        log_decay = log_decay.float().view(1, heads, 1).expand(batch, heads, seq_len)
    if pad:
        q = torch.nn.functional.pad(q, (0, 0, 0, pad))
        k = torch.nn.functional.pad(k, (0, 0, 0, pad))
        v = torch.nn.functional.pad(v, (0, 0, 0, pad))
        if log_decay is not None and not constant_decay:
            log_decay = torch.nn.functional.pad(log_decay, (0, pad))
    n_chunks = (seq_len + pad) // chunk_size
    # [B, H, T, D] -> [B, H, N, C, D]
    q = q.view(batch, heads, n_chunks, chunk_size, d_k)
    k = k.view(batch, heads, n_chunks, chunk_size, d_k)
    v = v.view(batch, heads, n_chunks, chunk_size, d_v)

    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
    scores = q @ k.transpose(-1, -2)  # [B, H, N, C, C]
    if log_decay is None:
        scores = scores.masked_fill(~causal, 0.0)
        q_inter, k_inter, chunk_decay = q, k, None
    else:
        if constant_decay:
            # the same decays in every chunk: build them once, [H, 1, C] broadcast over batch and chunks
            steps = torch.arange(1, chunk_size + 1, device=q.device, dtype=torch.float32)
            b = (log_decay.float().view(heads, 1) * steps).view(1, heads, 1, chunk_size)
        else:
            # cumulative log-decay inside each chunk: b_i = g_1 + ... + g_i  (<= 0, reset per chunk)
            b = log_decay.float().view(batch, heads, n_chunks, chunk_size).cumsum(-1)  # [B, H, N, C]
        b_last = b[..., -1:]  # [B, H, N, 1]
        # exp(b_i - b_j) for j <= i; masked entries get -inf before exp so nothing overflows
        pair = (b.unsqueeze(-1) - b.unsqueeze(-2)).masked_fill(~causal, float("-inf"))
        scores = scores * pair.exp()
        q_inter = q * b.exp().unsqueeze(-1)
        k_inter = k * (b_last - b).exp().unsqueeze(-1)
        chunk_decay = b_last.exp().unsqueeze(-1)  # [B, H, N, 1, 1]
        if constant_decay:
            chunk_decay = chunk_decay.expand(batch, heads, n_chunks, 1, 1)
    out = scores @ v  # intra-chunk part, [B, H, N, C, Dv]

    # Inter-chunk part. Each chunk's contribution k^T v comes from one batched matmul; the scan over chunks
    # is elementwise only (unbind, not indexing, keeps autograd's backward linear in N); then every chunk
    # reads its incoming state in one more batched matmul. Memory: N states of d_k x d_v = O(seq * d).
    kv = (k_inter.transpose(-1, -2) @ v).unbind(2)  # N x [B, H, Dk, Dv]
    decays = chunk_decay.unbind(2) if chunk_decay is not None else None
    incoming = []
    for n in range(n_chunks):
        incoming.append(state)
        state = state * decays[n] + kv[n] if decays is not None else state + kv[n]
    out = out + q_inter @ torch.stack(incoming, dim=2)
    out = out.view(batch, heads, n_chunks * chunk_size, d_v)[:, :, :seq_len]
    return out.to(out_dtype), state


def recurrent_linear_attention_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | None,
    state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of the recurrence, for generation.

    Args:
        q, k: `[batch, heads, d_k]`; v: `[batch, heads, d_v]`.
        log_decay: `[batch, heads]` or `[heads]` (<= 0), or `None`.
        state: `[batch, heads, d_k, d_v]` fp32.

    Returns:
        `(output [batch, heads, d_v] in q's dtype, new_state fp32)`.
    """
    kv = k.float().unsqueeze(-1) * v.float().unsqueeze(-2)  # [B, H, Dk, Dv]
    if log_decay is not None:
        decay = log_decay.float().exp()
        decay = decay.view(1, -1, 1, 1) if decay.dim() == 1 else decay[..., None, None]
        state = torch.addcmul(kv, state, decay)
    else:
        state = state + kv
    out = (q.float().unsqueeze(-2) @ state).squeeze(-2)
    return out.to(q.dtype), state
