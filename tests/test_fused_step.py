"""The fused decode step (`ringan.fused_step`) against the model's own one-token forward."""

from __future__ import annotations

import pytest
import torch
from helpers import ATTENTION_TYPES, rel_err, tiny_model

from ringan.decoding import TorchStep
from ringan.fused_step import FUSED_MIXERS, FusedDeltaStep
from ringan.modeling.quantization import quantize_model_

VARIANTS = {
    "defaults": {},
    "no conv, no gate, GELU MLP": {"conv_size": 0, "use_output_gate": False, "gated_mlp": False, "hidden_act": "gelu"},
    "no RoPE": {"use_rope": False},
}


def _left_padded_prefill(model, **conditioning):
    ids = torch.randint(4, 99, (3, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # rows of different lengths: each has its own RoPE position
    mask[2, :9] = 0
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1, **conditioning)
    return out.cache


def _clone(cache):
    return type(cache).from_state_dict({k: v.clone() for k, v in cache.state_dict().items()}, len(cache))


def _assert_steps_match(model, steps: int = 12, tolerance: float = 1e-5, **conditioning):
    reference = _left_padded_prefill(model, **conditioning)
    fused_cache = _clone(reference)
    fused = FusedDeltaStep(model)
    tokens = torch.tensor([7, 8, 9])
    with torch.inference_mode():
        for _ in range(steps):
            expected = model(input_ids=tokens[:, None], cache=reference, use_cache=True).logits[:, -1]
            got, fused_cache = fused(tokens, fused_cache)
            assert rel_err(got, expected) < tolerance
            tokens = expected.argmax(-1)
    assert torch.equal(fused_cache.seen_tokens, reference.seen_tokens)
    for name, tensor in reference.state_dict().items():
        assert rel_err(fused_cache.state_dict()[name], tensor) < tolerance, name


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("attention_type", FUSED_MIXERS)
def test_fused_step_equals_the_model_forward(attention_type, variant):
    _assert_steps_match(tiny_model(attention_type, **VARIANTS[variant]))


def test_fused_step_keeps_the_conversation_conditioning():
    model = tiny_model(conditioning="text")
    with torch.no_grad():
        model.model.conditioning.context_norm.weight.fill_(2.0)  # a vector large enough to change the tokens
    context = torch.randint(4, 99, (3, 6), generator=torch.Generator().manual_seed(2))
    _assert_steps_match(model, context_input_ids=context)


def test_fused_step_with_topic_and_context_ids():
    model = tiny_model(conditioning="ids")
    _assert_steps_match(model, topic_ids=torch.tensor([1, 2, 3]), context_ids=torch.tensor([3, 0, 1]))


@pytest.mark.parametrize("bits", [8, 4])
def test_fused_step_runs_quantized_weights_as_the_model_does(bits):
    model = quantize_model_(tiny_model(), bits)
    fused = FusedDeltaStep(model)
    if bits == 8:  # int8 codes concatenate: one kernel call for q, k, v and the gate, with no float copy
        assert fused.layers[0].in_proj.codes is not None and fused.layers[0].in_proj.weight is None
    _assert_steps_match(model, tolerance=1e-3)  # bf16 activations in both


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_torch_back_end_fuses_the_delta_mixers_only(attention_type):
    model = tiny_model(attention_type)
    assert (TorchStep(model).fused is not None) == (attention_type in FUSED_MIXERS)
    if attention_type not in FUSED_MIXERS:
        with pytest.raises(ValueError, match="fused step covers"):
            FusedDeltaStep(model)


def test_fused_step_refuses_a_cache_that_read_right_padding():
    model = tiny_model()
    ids = torch.randint(4, 99, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    with torch.inference_mode():
        cache = model(input_ids=ids, attention_mask=mask, use_cache=True).cache
    with pytest.raises(ValueError, match="right-padded"):
        FusedDeltaStep(model)(torch.tensor([5, 6]), cache)
