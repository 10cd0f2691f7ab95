"""Topic/context conditioning: vectors from text (any Topik/Konteks) and the founding document's id tables."""

from __future__ import annotations

import pytest
import torch
from fresh_process import run_without_ringan
from helpers import ATTENTION_TYPES, rel_err, tiny_config, tiny_model

from ringan import RinganForCausalLM


def text_model(attention_type: str = ATTENTION_TYPES[0], seed: int = 0, **overrides):
    model = tiny_model(attention_type, seed=seed, conditioning="text", **overrides)
    with torch.no_grad():  # the vectors start small; make them count in these tests
        for norm in (model.model.conditioning.topic_norm, model.model.conditioning.context_norm):
            norm.weight.normal_(mean=1.0, std=0.3)
    return model


def conditioning_inputs(batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    topic = torch.randint(4, 99, (batch, 4), generator=g)
    context = torch.randint(4, 99, (batch, 9), generator=g)
    context_mask = torch.ones_like(context)
    context_mask[1, 6:] = 0  # a shorter Konteks in row 1
    return {"topic_input_ids": topic, "context_input_ids": context, "context_attention_mask": context_mask}


def test_text_vectors_equal_a_manual_pooled_projection():
    model = text_model()
    inputs = conditioning_inputs()
    embed = model.model.embed_tokens.weight.double()
    cond = model.model.conditioning

    def rms(x, eps):
        return x / x.pow(2).mean(-1, keepdim=True).add(eps).sqrt()

    def vector(ids, mask, proj, norm):
        pooled = rms((embed[ids] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), torch.finfo(torch.float32).eps)
        return rms(pooled @ proj.weight.double().T, norm.eps) * norm.weight.double()

    ones = torch.ones(2, 4, dtype=torch.float64)
    expected = vector(inputs["topic_input_ids"], ones, cond.topic_proj, cond.topic_norm)
    context_mask = inputs["context_attention_mask"].double()
    expected = expected + vector(inputs["context_input_ids"], context_mask, cond.context_proj, cond.context_norm)
    got = cond(model.model.embed_tokens, 2, 1, inputs)[:, 0]
    assert rel_err(got, expected) < 1e-5
    # padding of the conditioning text changes nothing
    longer = dict(inputs)
    longer["context_input_ids"] = torch.cat([inputs["context_input_ids"], torch.full((2, 3), 7)], dim=1)
    longer["context_attention_mask"] = torch.cat(
        [inputs["context_attention_mask"], torch.zeros(2, 3, dtype=torch.long)], 1
    )
    torch.testing.assert_close(cond(model.model.embed_tokens, 2, 1, longer), got[:, None])


def test_text_conditioning_changes_the_prediction_and_none_adds_nothing():
    model = text_model()
    ids = torch.randint(4, 99, (2, 12))
    inputs = conditioning_inputs()
    with torch.no_grad():
        plain = model(ids).logits
        conditioned = model(ids, **inputs).logits
        other = model(ids, **conditioning_inputs(seed=1)).logits
        empty = model(
            ids, context_input_ids=torch.zeros(2, 1, dtype=torch.long), context_attention_mask=torch.zeros(2, 1)
        ).logits
    assert not torch.allclose(plain, conditioned) and not torch.allclose(conditioned, other)
    torch.testing.assert_close(empty, plain)  # an empty Konteks is no Konteks
    fresh = RinganForCausalLM(tiny_config(conditioning="text"))  # an untrained conditioner's vector is small
    vector = fresh.model.conditioning(
        fresh.model.embed_tokens, 2, 1, {"context_input_ids": inputs["context_input_ids"]}
    )
    token_scale = fresh.model.embed_tokens.weight.pow(2).mean().sqrt()
    assert 0.05 < float(vector.pow(2).mean().sqrt() / token_scale) < 0.2


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_text_conditioning_generate_left_padded_and_beams(attention_type):
    model = text_model(attention_type)
    inputs = conditioning_inputs()
    rows = [torch.randint(4, 99, (n,)) for n in (11, 5)]
    batch = torch.zeros(2, 11, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for i, r in enumerate(rows):
        batch[i, 11 - len(r) :] = r
        mask[i, 11 - len(r) :] = 1
    kwargs = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        together = model.generate(batch, attention_mask=mask, **inputs, **kwargs)
        for i, r in enumerate(rows):
            row_inputs = {k: v[i : i + 1] for k, v in inputs.items()}
            alone = model.generate(r[None], **row_inputs, **kwargs)
            assert torch.equal(together[i, 11:], alone[0, len(r) :])
            # greedy through the cache equals recomputing with the conditioning every time
            seq = r[None]
            for _ in range(6):
                logits = model(seq, use_cache=False, **row_inputs).logits[:, -1]
                seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
            assert torch.equal(alone, seq)
        beams = model.generate(
            batch,
            attention_mask=mask,
            **inputs,
            num_beams=3,
            num_return_sequences=2,
            length_penalty=0.0,
            output_scores=True,
            return_dict_in_generate=True,
            **kwargs,
        )
        rows_of = torch.tensor([0, 0, 1, 1])
        expanded = {k: v[rows_of] for k, v in inputs.items()}
        full = model(
            beams.sequences,
            attention_mask=mask[rows_of].new_ones(4, 17)
            * torch.cat([mask[rows_of], torch.ones(4, 6, dtype=torch.long)], 1),
            use_cache=False,
            **expanded,
        ).logits
        logp = full.log_softmax(-1)[:, 10:-1].gather(-1, beams.sequences[:, 11:, None])[..., 0].sum(-1)
    torch.testing.assert_close(beams.sequences_scores, logp, rtol=0, atol=1e-4)


def test_the_cache_keeps_the_conversation_vector():
    model = text_model()
    inputs = {k: v[:1] for k, v in conditioning_inputs().items()}
    ids = torch.randint(4, 99, (1, 20))
    with torch.no_grad():
        full = model(ids, **inputs).logits
        first = model(ids[:, :12], use_cache=True, **inputs)
        saved = {k: v.clone() for k, v in first.cache.state_dict().items()}
        rest = model(ids[:, 12:], cache=first.cache, use_cache=True)  # no conditioning passed again
    assert rel_err(torch.cat([first.logits, rest.logits], 1), full) < 1e-5
    assert "condition" in saved  # a saved chat session keeps it too
    from ringan import RinganCache

    with torch.no_grad():
        again = model(ids[:, 12:], cache=RinganCache.from_state_dict(saved, 2), use_cache=True)
    torch.testing.assert_close(again.logits, rest.logits)


def test_conditioning_dropout_drops_whole_sequences_during_training_only():
    model = text_model(conditioning_dropout=0.5)
    cond = model.model.conditioning
    inputs = conditioning_inputs(batch=64)
    inputs["context_attention_mask"] = torch.ones(64, 9, dtype=torch.long)
    torch.manual_seed(0)
    model.train()
    vectors = cond(model.model.embed_tokens, 64, 1, {"context_input_ids": inputs["context_input_ids"]})[:, 0]
    dropped = (vectors.abs().sum(-1) == 0).float().mean().item()
    assert 0.3 < dropped < 0.7
    model.eval()
    vectors = cond(model.model.embed_tokens, 64, 1, {"context_input_ids": inputs["context_input_ids"]})[:, 0]
    assert (vectors.abs().sum(-1) > 0).all()


def test_conditioning_inputs_of_the_other_mode_are_refused():
    ids = torch.randint(4, 99, (2, 8))
    with pytest.raises(ValueError, match="conditioning is 'text'"):
        text_model()(ids, topic_ids=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="conditioning is 'ids'"):
        tiny_model(conditioning="ids")(ids, context_input_ids=torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="context_input_ids must have shape"):
        text_model()(ids, context_input_ids=torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="context_input_ids holds 500"):
        text_model()(ids, context_input_ids=torch.full((2, 3), 500))


def test_text_conditioned_checkpoint_runs_in_a_fresh_process(tmp_path):
    model = text_model()
    model.save_pretrained(tmp_path / "ckpt")
    inputs = {k: v[:1] for k, v in conditioning_inputs().items()}
    ids = torch.randint(4, 99, (1, 9))
    with torch.no_grad():
        expected = model(ids, **inputs).logits[0, -1].tolist()
        expected_gen = model.generate(ids, **inputs, max_new_tokens=4, do_sample=False, eos_token_id=None).tolist()
    payload = run_without_ringan(
        f"""
        import json
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        inputs = {{k: torch.tensor(v) for k, v in { ({k: v.tolist() for k, v in inputs.items()})!r}.items()}}
        ids = torch.tensor({ids.tolist()!r})
        with torch.no_grad():
            logits = model(ids, **inputs).logits[0, -1].tolist()
            generated = model.generate(ids, **inputs, max_new_tokens=4, do_sample=False, eos_token_id=None).tolist()
        print(json.dumps({{"logits": logits, "generated": generated}}))
        """,
        tmp_path,
    )
    torch.testing.assert_close(torch.tensor(payload["logits"]), torch.tensor(expected))
    assert payload["generated"] == expected_gen


def test_per_token_ids_embed_each_token_with_its_own_row():
    """Packed sequences: every token's input is token_emb + topic_emb[its topic] + context_emb[its context]."""
    model = tiny_model(conditioning="ids")
    ids = torch.randint(4, 99, (2, 10))
    topics = torch.tensor([[1] * 4 + [3] * 6, [2] * 7 + [4] * 3])
    contexts = torch.tensor([[5] * 4 + [6] * 6, [1] * 7 + [2] * 3])
    seen = {}

    def capture(module, args):
        seen["input"] = args[0]  # returns None: the layer's inputs stay as they are

    hook = model.model.layers[0].register_forward_pre_hook(capture)
    with torch.no_grad():
        model(ids, topic_ids=topics, context_ids=contexts, use_cache=False)
    hook.remove()
    cond = model.model.conditioning
    expected = (
        model.model.embed_tokens.weight[ids] + cond.embed_topics.weight[topics] + cond.embed_contexts.weight[contexts]
    )
    torch.testing.assert_close(seen["input"], expected)
