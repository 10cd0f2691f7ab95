"""The fused decode step (`ringan.modeling.fused_step`), which `RinganForCausalLM.forward` runs for a one-token
call with a cache and no gradients, against the general forward (which runs whenever gradients are on)."""

from __future__ import annotations

import pytest
import torch
from helpers import ATTENTION_TYPES, rel_err, tiny_model

from ringan.modeling.fused_step import FUSED_MIXERS, FusedDeltaStep
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
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1, **conditioning).cache


def _clone(cache):
    return type(cache).from_state_dict({k: v.clone() for k, v in cache.state_dict().items()}, len(cache))


def _general_step(model, tokens, cache):
    with torch.enable_grad():  # gradients on: the general forward
        return model(input_ids=tokens[:, None], cache=cache, use_cache=True).logits[:, -1].detach()


def _fused_step(model, tokens, cache):
    with torch.no_grad():
        return model(input_ids=tokens[:, None], cache=cache, use_cache=True).logits[:, -1]


def _assert_steps_match(model, steps: int = 12, tolerance: float = 1e-5, **conditioning):
    reference = _left_padded_prefill(model, **conditioning)
    fused_cache = _clone(reference)
    tokens = torch.tensor([7, 8, 9])
    for _ in range(steps):
        expected = _general_step(model, tokens, reference)
        got = _fused_step(model, tokens, fused_cache)
        assert rel_err(got, expected) < tolerance
        tokens = expected.argmax(-1)
    assert model._fused_step is not None  # the fused path ran
    assert torch.equal(fused_cache.seen_tokens, reference.seen_tokens)
    for name, tensor in reference.state_dict().items():
        assert rel_err(fused_cache.state_dict()[name], tensor.detach()) < tolerance, name


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("attention_type", FUSED_MIXERS)
def test_fused_step_equals_the_general_forward(attention_type, variant):
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
def test_fused_step_runs_quantized_weights_in_their_kernels(bits):
    model = quantize_model_(tiny_model(), bits)
    if bits == 8:  # int8 codes concatenate: one kernel call for q, k, v and the gate, with no float copy
        projection = FusedDeltaStep(model).layers[0].in_proj
        assert projection.codes is not None and projection.weight is None
    # the general forward under gradients runs the dequantized float weights; the kernels take bf16 activations
    _assert_steps_match(model, tolerance=2e-2)


def test_fused_step_follows_weights_changed_after_it_was_built():
    model = tiny_model()
    cache = _left_padded_prefill(model)
    _fused_step(model, torch.tensor([7, 8, 9]), _clone(cache))
    with torch.no_grad():  # in place, as an optimizer step does
        model.model.layers[0].self_attn.q_proj.weight.mul_(1.5)
        model.model.layers[1].mlp.up_proj.weight.add_(0.1)
    tokens = torch.tensor([7, 8, 9])
    assert rel_err(_fused_step(model, tokens, _clone(cache)), _general_step(model, tokens, _clone(cache))) < 1e-5
    quantize_model_(model, 8)  # modules swapped for quantized ones
    cache = _left_padded_prefill(model)
    got, expected = _fused_step(model, tokens, _clone(cache)), _general_step(model, tokens, _clone(cache))
    assert rel_err(got, expected) < 2e-2
    assert model._fused_step.layers[0].in_proj.codes is not None


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_every_mixer_decodes_a_token_as_its_general_forward(attention_type):
    model = tiny_model(attention_type)
    cache = _left_padded_prefill(model)
    tokens = torch.tensor([7, 8, 9])
    assert rel_err(_fused_step(model, tokens, _clone(cache)), _general_step(model, tokens, _clone(cache))) < 1e-5
    assert (model._fused_step is not None) == (attention_type in FUSED_MIXERS)
    if attention_type not in FUSED_MIXERS:
        with pytest.raises(ValueError, match="fused step covers"):
            FusedDeltaStep(model)


def test_fused_step_refuses_a_cache_that_read_right_padding_and_bad_ids():
    model = tiny_model()
    ids = torch.randint(4, 99, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    with torch.no_grad():
        cache = model(input_ids=ids, attention_mask=mask, use_cache=True).cache
        with pytest.raises(ValueError, match="right-padded"):
            model(input_ids=torch.tensor([[5], [6]]), cache=cache)
        cache = model(input_ids=ids, use_cache=True).cache
        with pytest.raises(ValueError, match="holds 100, outside 0..98"):
            model(input_ids=torch.tensor([[5], [100]]), cache=cache)
