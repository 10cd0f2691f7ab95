"""Each mixer layer against `naive_mixer` (recomputed from the layer's weights in float64): the chunkwise path
and the decode step, with left padding, for every attention type and option."""

from __future__ import annotations

import pytest
import torch
from helpers import ATTENTION_TYPES, perturb_, rel_err, tiny_config

from ringan.modeling.modeling_ringan import MIXERS
from ringan.modeling.modules import RinganRotaryEmbedding, apply_rotary
from ringan.modeling.naive import naive_mixer

OPTIONS = [
    {},
    {"conv_size": 0},
    {"conv_size": 4},
    {"use_output_gate": True},
    {"use_output_gate": False},
    {"use_rope": False},
]


def _mixer(attention_type: str, options: dict):
    torch.manual_seed(0)
    config = tiny_config(attention_type, **options)
    mixer = MIXERS[attention_type](config, layer_idx=0).eval()
    for module in mixer.modules():  # the model's own initialiser, then random norms/decays/gates
        if hasattr(module, "weight") and isinstance(module.weight, torch.nn.Parameter) and module.weight.dim() >= 2:
            torch.nn.init.normal_(module.weight, std=0.3)
    perturb_(mixer)
    return config, mixer


def _padded_batch(hidden: int, length: int, pad: int):
    torch.manual_seed(length)
    x = torch.randn(2, length, hidden)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[0, :pad] = False
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)  # padding takes no position
    return x, mask, positions


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("length", [1, 65, 130])
def test_mixer_matches_reference_in_chunks_and_in_steps(attention_type, options, length):
    config, mixer = _mixer(attention_type, options)
    pad = min(5, length - 1)
    x, mask, positions = _padded_batch(config.hidden_size, length, pad)
    cos, sin = RinganRotaryEmbedding(config.head_dim, config.rope_theta)(positions)
    keep = mask.unsqueeze(-1)
    with torch.no_grad():
        reference = naive_mixer(mixer, x, mask, config.rope_theta)
        whole, _ = mixer(x, cos, sin, mask, None)
        assert rel_err(whole * keep, reference) < 1e-5
        # a first piece through the chunkwise path, the rest token by token through the decode step
        split = length // 2 + 1 if length > 1 else 1
        pieces, state = [], None
        first, state = mixer(x[:, :split], cos[:, :, :split], sin[:, :, :split], mask[:, :split], None)
        pieces.append(first)
        for t in range(split, length):
            step = slice(t, t + 1)
            out, state = mixer(x[:, step], cos[:, :, step], sin[:, :, step], mask[:, step], state)
            pieces.append(out)
        assert rel_err(torch.cat(pieces, dim=1) * keep, reference) < 1e-5


def test_rope_angles_are_exact_at_128k_positions():
    """Against angles computed in float64 from the definition: fp32 angles were 1.1e-3 off at 64k-128k."""
    rope = RinganRotaryEmbedding(head_dim=64, theta=10000.0)
    positions = torch.tensor([[0, 1, 65_535, 100_003, 131_071, 131_072]])
    cos, sin = rope(positions)
    i = torch.arange(32, dtype=torch.float64)
    angles = positions.double()[0, :, None] * 10000.0 ** (-2 * i / 64)
    torch.testing.assert_close(cos[0, 0, :, :32].double(), angles.cos(), rtol=0, atol=1e-6)
    torch.testing.assert_close(sin[0, 0, :, 32:].double(), angles.sin(), rtol=0, atol=1e-6)
    x = torch.randn(1, 1, 6, 64)
    rotated = apply_rotary(x, cos, sin).double()
    x1, x2 = x.double()[..., :32], x.double()[..., 32:]
    expected = torch.cat([x1 * angles.cos() - x2 * angles.sin(), x2 * angles.cos() + x1 * angles.sin()], -1)
    assert rel_err(rotated, expected) < 1e-5


def test_rotary_embedding_is_a_rotation_by_relative_position():
    rope = RinganRotaryEmbedding(head_dim=8, theta=10000.0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def rotated(x, position):
        cos, sin = rope(torch.tensor([[position]]))
        return apply_rotary(x, cos, sin)

    dot = (rotated(q, 7) * rotated(k, 3)).sum()
    shifted = (rotated(q, 107_007) * rotated(k, 107_003)).sum()
    torch.testing.assert_close(dot, shifted, rtol=1e-5, atol=1e-5)  # depends on m - n only
    torch.testing.assert_close(rotated(q, 12345).norm(), q.norm())  # a rotation keeps the norm
    torch.testing.assert_close(rotated(q, 0), q)
