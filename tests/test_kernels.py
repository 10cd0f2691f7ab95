"""The attention kernels (chunkwise-parallel and recurrent step) against the float64 references in naive.py."""

from __future__ import annotations

import pytest
import torch
from helpers import LENGTHS, rel_err

from ringan.modeling.naive import naive_delta_rule, naive_linear_attention, naive_recurrent_linear_attention
from ringan.modeling.ops_delta_rule import (
    chunk_delta_rule,
    recurrent_delta_rule_step,
    solve_unit_lower_blockwise,
    solve_unit_lower_by_doubling,
)
from ringan.modeling.ops_linear_attention import chunk_linear_attention, recurrent_linear_attention_step


def _linear_inputs(length: int, decay: str):
    torch.manual_seed(length)
    b, h, d = 2, 3, 8
    q, k, v = (torch.randn(b, h, length, d) for _ in range(3))
    log_decay = {
        "none": None,
        "constant": torch.tensor([0.9, 0.99, 0.5]).log(),
        "data": torch.nn.functional.logsigmoid(torch.randn(b, h, length)),
    }[decay]
    return q, k, v, log_decay, torch.randn(b, h, d, d)


def _step_loop(step, inputs, log_decay, state, per_token):
    """Feed a kernel's decode step one token at a time."""
    outs = []
    for t in range(inputs[0].shape[2]):
        g = None if log_decay is None else (log_decay[:, :, t] if log_decay.dim() == 3 else log_decay)
        args = [x[:, :, t] for x in inputs[:3]] + [x[:, :, t] for x in per_token]
        out, state = step(*args, g, state)
        outs.append(out)
    return torch.stack(outs, dim=2), state


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("decay", ["none", "constant", "data"])
def test_linear_attention_chunk_and_step_match_reference(length, decay):
    q, k, v, log_decay, state0 = _linear_inputs(length, decay)
    ref_out, ref_state = naive_linear_attention(q, k, v, log_decay, state0)
    rec_out, rec_state = naive_recurrent_linear_attention(q, k, v, log_decay, state0)
    assert rel_err(rec_out, ref_out) < 1e-9 and rel_err(rec_state, ref_state) < 1e-9  # the two references agree
    chunk_out, chunk_state = chunk_linear_attention(q, k, v, log_decay, state0, chunk_size=64)
    step_out, step_state = _step_loop(recurrent_linear_attention_step, (q, k, v), log_decay, state0, [])
    for got, want in [(chunk_out, ref_out), (chunk_state, ref_state), (step_out, ref_out), (step_state, ref_state)]:
        assert rel_err(got, want) < 1e-5


def test_linear_attention_chunkwise_is_stable_far_beyond_one_chunk():
    # a global gamma^-t factorisation overflows fp32 here; the chunk-local form must not
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 4000, 4) for _ in range(3))
    out, state = chunk_linear_attention(q, k, v, torch.tensor([0.9]).log())
    assert torch.isfinite(out).all() and torch.isfinite(state).all()
    ref_out, _ = naive_linear_attention(q, k, v, torch.tensor([0.9]).log())
    assert rel_err(out, ref_out) < 1e-5


def _delta_inputs(length: int, gated: bool, seed: int = 0):
    torch.manual_seed(length + 1000 * seed)
    b, h, d = 2, 3, 8
    q = torch.randn(b, h, length, d)
    k = torch.nn.functional.normalize(torch.randn(b, h, length, d), dim=-1)
    v = torch.randn(b, h, length, d)
    beta = torch.rand(b, h, length)
    log_decay = torch.nn.functional.logsigmoid(torch.randn(b, h, length) + 2) if gated else None
    return q, k, v, beta, log_decay, torch.randn(b, h, d, d)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("gated", [False, True])
def test_delta_rule_chunk_and_step_match_reference(length, gated):
    q, k, v, beta, log_decay, state0 = _delta_inputs(length, gated)
    ref_out, ref_state = naive_delta_rule(q, k, v, beta, log_decay, state0)
    chunk_out, chunk_state = chunk_delta_rule(q, k, v, beta, log_decay, state0, chunk_size=64)
    small_out, small_state = chunk_delta_rule(q, k, v, beta, log_decay, state0, chunk_size=16)
    step_out, step_state = _step_loop(recurrent_delta_rule_step, (q, k, v), log_decay, state0, [beta])
    results = [(chunk_out, ref_out), (chunk_state, ref_state), (small_out, ref_out), (small_state, ref_state)]
    results += [(step_out, ref_out), (step_state, ref_state)]
    for got, want in results:
        assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("size", [1, 7, 16, 64, 65])
def test_loop_free_unit_lower_solve_equals_triangular_solve(size):
    torch.manual_seed(size)
    lower = (torch.randn(3, size, size) * 0.3).tril(-1)
    rhs = torch.randn(3, size, 5)
    expected = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
    assert rel_err(solve_unit_lower_by_doubling(lower, rhs), expected) < 1e-5


def _alike_keys_system(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The delta rule's chunk system when every key shares a component (a topic/context vector added to every
    token): `L[i, j] = beta_i (k_i . k_j)` near 1 below the diagonal."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.nn.functional.normalize(torch.randn(3, size, 16, generator=g) * 0.3 + torch.ones(16), dim=-1)
    beta = 0.5 + 0.5 * torch.rand(3, size, 1, generator=g)
    return (beta * keys @ keys.transpose(-1, -2)).tril(-1), torch.randn(3, size, 5, generator=g)


@pytest.mark.parametrize("size", [1, 7, 8, 9, 33, 64])
def test_blockwise_loop_free_solve_stays_exact_when_keys_are_alike(size):
    lower, rhs = _alike_keys_system(size)
    expected = torch.linalg.solve_triangular(lower.double(), rhs.double(), upper=False, unitriangular=True)
    assert rel_err(solve_unit_lower_blockwise(lower, rhs, max_size=64), expected.float()) < 1e-4
    if size == 64:  # what the export used before: the product form alone is far off here
        assert rel_err(solve_unit_lower_by_doubling(lower, rhs), expected.float()) > 1e-3


def test_delta_rule_chunk_with_the_loop_free_solve_matches_reference():
    q, k, v, beta, log_decay, state0 = _delta_inputs(100, gated=True)
    ref_out, ref_state = naive_delta_rule(q, k, v, beta, log_decay, state0)
    out, state = chunk_delta_rule(q, k, v, beta, log_decay, state0, 32, solve_chunk=solve_unit_lower_by_doubling)
    assert rel_err(out, ref_out) < 1e-5 and rel_err(state, ref_state) < 1e-5


def test_delta_rule_state_stays_bounded_over_a_long_sequence():
    # unit keys and beta in (0, 1): every step is a contraction plus a bounded write
    q, k, v, beta, log_decay, _ = _delta_inputs(4000, gated=False)
    out, state = chunk_delta_rule(q, k, v, beta, None, None)
    assert torch.isfinite(out).all()
    assert state.abs().max() < 10 * v.abs().max()
    ref_out, _ = naive_delta_rule(q[:, :, :300], k[:, :, :300], v[:, :, :300], beta[:, :, :300])
    assert rel_err(out[:, :, :300], ref_out) < 1e-5


@pytest.mark.parametrize("gated", [False, True])
def test_delta_rule_gradients_match_reference(gated):
    q, k, v, beta, log_decay, state0 = _delta_inputs(70, gated, seed=1)
    inputs = [q, k, v, beta] + ([log_decay] if gated else [])
    fast = [x.clone().requires_grad_(True) for x in inputs]
    slow = [x.double().clone().requires_grad_(True) for x in inputs]
    weights = torch.randn(2, 3, 70, 8)
    out, _ = chunk_delta_rule(*fast[:4], fast[4] if gated else None, state0, chunk_size=32)
    (out * weights).sum().backward()
    ref, _ = naive_delta_rule(*slow[:4], slow[4] if gated else None, state0)
    (ref * weights.double()).sum().backward()
    for a, b in zip(fast, slow):
        assert rel_err(a.grad, b.grad) < 1e-4
