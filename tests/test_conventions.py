"""What transformers' own model and generation tests expect of a model, checked for Ringan directly."""

from __future__ import annotations

import warnings

import pytest
import torch
from fresh_process import run_without_ringan
from helpers import ATTENTION_TYPES, tiny_model
from transformers import GradientCheckpointingLayer


def test_generate_returns_hidden_states_and_scores_at_every_step():
    model = tiny_model()
    prompt = torch.randint(4, 99, (2, 6))
    with torch.no_grad():
        out = model.generate(
            prompt,
            max_new_tokens=4,
            do_sample=False,
            eos_token_id=None,
            output_hidden_states=True,
            output_scores=True,
            return_dict_in_generate=True,
        )
    assert len(out.hidden_states) == 4 and len(out.scores) == 4
    for step, layers in enumerate(out.hidden_states):
        assert layers is not None and len(layers) == model.config.num_hidden_layers + 1
        assert layers[-1].shape == (2, 6 if step == 0 else 1, model.config.hidden_size)


def test_config_output_hidden_states_and_return_dict_are_respected():
    model = tiny_model(output_hidden_states=True, return_dict=False)
    ids = torch.randint(4, 99, (1, 5))
    with torch.no_grad():
        out = model(ids, use_cache=False)
        assert isinstance(out, tuple)
        logits, hidden = out
        assert logits.shape == (1, 5, 99) and len(hidden) == 3
        assert isinstance(model(ids, return_dict=True, output_hidden_states=False), dict)


def test_decoder_layers_are_gradient_checkpointing_layers():
    model = tiny_model().train()
    assert all(isinstance(layer, GradientCheckpointingLayer) for layer in model.model.layers)
    model.gradient_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.model.layers)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_torch_export_and_compile_without_graph_breaks(attention_type):
    model = tiny_model(attention_type)
    ids = torch.randint(4, 99, (2, 70))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        expected = model(ids, attention_mask=mask, use_cache=False).logits
        program = torch.export.export(model, (ids,), kwargs={"attention_mask": mask, "use_cache": False})
        torch.testing.assert_close(program.module()(ids, attention_mask=mask, use_cache=False).logits, expected)
        compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: a graph break raises
        torch.testing.assert_close(compiled(ids, attention_mask=mask, use_cache=False).logits, expected)


def test_past_key_values_is_an_alias_of_cache_with_a_warning():
    model = tiny_model()
    ids = torch.randint(4, 99, (1, 12))
    with torch.no_grad():
        first = model(ids[:, :8], use_cache=True)
        state = {k: v.clone() for k, v in first.cache.state_dict().items()}
        via_cache = model(ids[:, 8:], cache=first.cache, use_cache=True).logits
        from ringan import RinganCache

        with pytest.warns(FutureWarning, match="past_key_values"):
            via_alias = model(ids[:, 8:], past_key_values=RinganCache.from_state_dict(state, 2), use_cache=True).logits
        with pytest.raises(ValueError, match="as `cache` only"):
            model(ids[:, 8:], cache=first.cache, past_key_values=first.cache)
    torch.testing.assert_close(via_alias, via_cache)


def test_output_attentions_is_a_clear_error():
    with pytest.raises(ValueError, match="output_attentions is not available"):
        tiny_model()(torch.randint(4, 99, (1, 5)), output_attentions=True)


def test_auto_model_loads_the_base_model_through_remote_code(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "ckpt")
    ids = torch.randint(4, 99, (1, 7))
    with torch.no_grad():
        expected = model.model(ids).last_hidden_state[0, -1].tolist()
    payload = run_without_ringan(
        f"""
        import json
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        with torch.no_grad():
            hidden = model(torch.tensor({ids.tolist()!r})).last_hidden_state[0, -1].tolist()
        print(json.dumps({{"cls": type(model).__name__, "hidden": hidden}}))
        """,
        tmp_path,
    )
    assert payload["cls"] == "RinganModel"
    torch.testing.assert_close(torch.tensor(payload["hidden"]), torch.tensor(expected))


def test_no_warnings_on_a_plain_forward():
    model = tiny_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            model(torch.randint(4, 99, (1, 5)))
