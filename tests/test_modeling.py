"""The model: kernels against the quadratic reference, padding, cache consistency, generation, save/load."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from fresh_process import run_without_ringan
from helpers import ATTENTION_TYPES, LENGTHS, conditioning, rel_err, select_rows, tiny_model

import ringan  # noqa: F401  (registers the auto classes)
from ringan import RinganCache, RinganConfig, RinganForCausalLM
from ringan.modeling.modeling_ringan import CONDITION_GAIN

# ------------------------------------------------------------------------------- the attention layer


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("length", LENGTHS)
def test_padded_rows_equal_unpadded_rows(attention_type, length):
    model = tiny_model(attention_type)
    torch.manual_seed(1)
    pad = 5
    row = torch.randint(4, 99, (1, length))
    padded = torch.cat([torch.zeros(1, pad, dtype=torch.long), row], dim=1)
    other = torch.randint(4, 99, (1, length + pad))
    batch = torch.cat([padded, other])
    mask = torch.ones_like(batch)
    mask[0, :pad] = 0
    cond = conditioning(model, 2)
    with torch.no_grad():
        together = model(batch, attention_mask=mask, **cond).logits
        alone = model(row, **select_rows(cond, slice(0, 1))).logits
        other_alone = model(other, **select_rows(cond, slice(1, 2))).logits
    assert rel_err(together[0, pad:], alone[0]) < 1e-5
    assert rel_err(together[1], other_alone[0]) < 1e-5


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_left_padded_chunked_prefill_and_decode_equal_full_forward(attention_type):
    """The cache-consistency test: a left-padded batch, prefill in two pieces, then token-by-token decoding,
    equals one full forward of each unpadded row."""
    model = tiny_model(attention_type)
    torch.manual_seed(2)
    lengths = [70, 41, 9]
    rows = [torch.randint(4, 99, (n,)) for n in lengths]
    width = max(lengths)
    prompt_len = 30  # in the padded layout: shorter rows are part padding, part prompt
    batch = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for i, r in enumerate(rows):
        batch[i, width - len(r) :] = r
        mask[i, width - len(r) :] = 1
    cond = conditioning(model, 3)
    with torch.no_grad():
        cache = None
        pieces = []
        for start, stop in [(0, 17), (17, prompt_len)]:  # chunked prefill
            out = model(batch[:, start:stop], attention_mask=mask[:, :stop], cache=cache, use_cache=True, **cond)
            cache = out.cache
            pieces.append(out.logits)
        for t in range(prompt_len, width):  # decode step by step: the cache keeps the conditioning
            out = model(batch[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache, use_cache=True)
            cache = out.cache
            pieces.append(out.logits)
        stepped = torch.cat(pieces, dim=1)
        for i, r in enumerate(rows):
            full = model(r[None], **select_rows(cond, slice(i, i + 1))).logits[0]
            assert rel_err(stepped[i, width - len(r) :], full) < 1e-5
        assert cache.seen_tokens.tolist() == lengths


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_segmented_prefill_equals_one_pass(attention_type):
    model = tiny_model(attention_type, prefill_segment_size=64)
    ids = torch.randint(4, 99, (2, 300))
    cond = conditioning(model, 2)
    with torch.no_grad():
        full = model(ids, **cond).logits[:, -3:]
        segmented = model(ids, **cond, logits_to_keep=3)
    assert rel_err(segmented.logits, full) < 1e-5
    assert segmented.cache.seen_tokens.tolist() == [300, 300]


# --------------------------------------------------------------------------------------- behaviour


def test_default_size_matches_founding_document():
    model = RinganForCausalLM(RinganConfig())
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params - 6.73e6) / 6.73e6 < 0.05, n_params  # the budget: within 5% of the document


def test_id_conditioning_changes_logits_and_per_token_ids_broadcast():
    model = tiny_model(conditioning="ids")
    ids = torch.randint(4, 99, (2, 12))
    with torch.no_grad():
        base = model(ids, topic_ids=torch.tensor([1, 1]), context_ids=torch.tensor([2, 2])).logits
        topic = model(ids, topic_ids=torch.tensor([3, 3]), context_ids=torch.tensor([2, 2])).logits
        context = model(ids, topic_ids=torch.tensor([1, 1]), context_ids=torch.tensor([4, 4])).logits
        per_token = model(ids, topic_ids=torch.ones(2, 12, dtype=torch.long), context_ids=torch.full((2, 12), 2)).logits
        unknown = model(ids).logits
        zeros = model(
            ids, topic_ids=torch.zeros(2, dtype=torch.long), context_ids=torch.zeros(2, dtype=torch.long)
        ).logits
    assert not torch.allclose(base, topic) and not torch.allclose(base, context)
    torch.testing.assert_close(per_token, base)
    torch.testing.assert_close(unknown, zeros)
    with pytest.raises(ValueError, match="topic_ids holds 9, outside 0..4"):
        model(ids, topic_ids=torch.tensor([9, 1]))


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_batched_equals_one_by_one(attention_type):
    model = tiny_model(attention_type)
    ids = torch.randint(4, 99, (3, 40))
    cond = conditioning(model, 3)
    with torch.no_grad():
        batched = model(ids, **cond).logits
        single = torch.cat([model(ids[i : i + 1], **select_rows(cond, slice(i, i + 1))).logits for i in range(3)])
    assert rel_err(batched, single) < 1e-5


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_gradients_reach_every_parameter(attention_type):
    model = tiny_model(attention_type).train()
    ids = torch.randint(4, 99, (2, 70))
    out = model(ids, **conditioning(model, 2), labels=ids)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_loss_matches_manual_shifted_cross_entropy_and_ignores_minus_100():
    model = tiny_model()
    ids = torch.randint(4, 99, (2, 20))
    labels = ids.clone()
    labels[0, :5] = -100
    with torch.no_grad():
        out = model(ids, labels=labels)
    manual = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, 99), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, manual)


def test_gradient_checkpointing_gives_same_gradients():
    model = tiny_model().train()
    ids = torch.randint(4, 99, (2, 30))
    cond = conditioning(model, 2)  # every parameter gets a gradient
    torch.manual_seed(1)  # the same dropout masks in both runs (checkpointing replays the RNG state)
    model(ids, labels=ids, **cond).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    torch.manual_seed(1)
    model(ids, labels=ids, **cond).loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[n], msg=n)


def test_logits_to_keep():
    model = tiny_model()
    ids = torch.randint(4, 99, (2, 20))
    with torch.no_grad():
        full = model(ids).logits
        last3 = model(ids, logits_to_keep=3).logits
    torch.testing.assert_close(last3, full[:, -3:])


# -------------------------------------------------------------------------------------- generation


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_greedy_generate_equals_no_cache_recompute(attention_type):
    model = tiny_model(attention_type)
    prompt = torch.randint(4, 99, (2, 11))
    cond = conditioning(model, 2)
    with torch.no_grad():
        generated = model.generate(prompt, **cond, max_new_tokens=12, do_sample=False, eos_token_id=None)
        seq = prompt
        for _ in range(12):
            logits = model(seq, **cond, use_cache=False).logits
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, seq)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_generate_left_padded_batch_equals_each_row_alone(attention_type):
    model = tiny_model(attention_type)
    rows = [torch.randint(4, 99, (n,)) for n in (13, 6)]
    batch = torch.zeros(2, 13, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for i, r in enumerate(rows):
        batch[i, 13 - len(r) :] = r
        mask[i, 13 - len(r) :] = 1
    kwargs = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    cond = conditioning(model, 2)
    with torch.no_grad():
        together = model.generate(batch, attention_mask=mask, **cond, **kwargs)
        for i, r in enumerate(rows):
            alone = model.generate(r[None], **select_rows(cond, slice(i, i + 1)), **kwargs)
            assert torch.equal(together[i, 13:], alone[0, len(r) :])


# the model's own conditioning, plus the id form per sequence and per token (packed conversations)
FORMS = [(None, False), ("ids", False), ("ids", True)]


def _extended(inputs: dict, length: int) -> dict:
    """Per-token ids over `length` positions: each generated token keeps the last prompt token's ids."""
    out = dict(inputs)
    for key in ("topic_ids", "context_ids"):
        ids = out.get(key)
        if ids is not None and ids.dim() == 2:
            out[key] = torch.cat([ids, ids[:, -1:].expand(-1, length - ids.shape[1])], dim=1)
    return out


def _full_logprobs(model, seqs, cond, rows):
    """Log-probabilities of every token of `seqs` by a full no-cache forward; `rows` maps each sequence to its
    prompt row (per-token ids: generated tokens keep the last prompt token's ids)."""
    logp = model(seqs, **_extended(select_rows(cond, rows), seqs.shape[1]), use_cache=False).logits.log_softmax(-1)
    return logp[:, :-1].gather(-1, seqs[:, 1:, None])[..., 0]  # [N, T - 1]


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("form,per_token", FORMS)
def test_beam_search_scores_equal_a_full_recompute(form, per_token, attention_type):
    """Beam search reorders the cache at every step; each returned beam's score must be exactly the sum of its
    generated tokens' log-probabilities under a fresh full forward."""
    model = tiny_model(attention_type, **({"conditioning": form} if form else {}))
    prompt = torch.randint(4, 99, (2, 7))
    cond = conditioning(model, 2, per_token=7 if per_token else None)
    with torch.no_grad():
        out = model.generate(
            prompt,
            **cond,
            num_beams=3,
            num_return_sequences=2,
            max_new_tokens=6,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            length_penalty=0.0,  # the score is then the plain sum of log-probabilities
            output_scores=True,
            return_dict_in_generate=True,
        )
        rows = torch.tensor([0, 0, 1, 1])
        recomputed = _full_logprobs(model, out.sequences, cond, rows)[:, 6:].sum(-1)
    assert out.sequences.shape == (4, 13)
    torch.testing.assert_close(out.sequences_scores, recomputed, rtol=0, atol=1e-4)
    assert (out.sequences_scores[::2] >= out.sequences_scores[1::2]).all()  # best beam first


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("form,per_token", FORMS)
def test_sampled_generate_equals_a_reference_sampler(form, per_token, attention_type):
    """Sampling through the cache draws exactly the tokens that a plain loop draws with full recomputes and the
    same random numbers (softmax, then one multinomial draw per row and step)."""
    model = tiny_model(attention_type, **({"conditioning": form} if form else {}))
    prompt = torch.randint(4, 99, (2, 7))
    cond = conditioning(model, 2, per_token=7 if per_token else None)
    settings = dict(do_sample=True, top_k=0, top_p=1.0, temperature=1.0, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        torch.manual_seed(123)
        sampled = model.generate(prompt, **cond, num_return_sequences=3, max_new_tokens=6, **settings)
        rows = torch.tensor([0, 0, 0, 1, 1, 1])
        seqs = prompt[rows]
        torch.manual_seed(123)
        for _ in range(6):
            logits = model(seqs, **_extended(select_rows(cond, rows), seqs.shape[1]), use_cache=False).logits[:, -1]
            seqs = torch.cat([seqs, torch.multinomial(logits.softmax(-1), 1)], dim=1)
    assert torch.equal(sampled, seqs)
    assert len({tuple(r) for r in sampled[:3, 7:].tolist()}) > 1  # the three samples of a row differ


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_continue_from_returned_cache(attention_type):
    model = tiny_model(attention_type)
    ids = torch.randint(4, 99, (1, 30))
    with torch.no_grad():
        full = model(ids).logits
        first = model(ids[:, :18], use_cache=True)
        saved = {k: v.clone() for k, v in first.cache.state_dict().items()}  # the cache is updated in place
        rest = model(ids[:, 18:], cache=first.cache, use_cache=True)
    assert rel_err(torch.cat([first.logits, rest.logits], 1), full) < 1e-5
    # a cache survives its own state_dict round trip (what chat sessions save)
    restored = RinganCache.from_state_dict(saved, num_layers=2)
    with torch.no_grad():
        again = model(ids[:, 18:], cache=restored, use_cache=True)
    torch.testing.assert_close(again.logits, rest.logits)


# ---------------------------------------------------------------------------------------- save/load


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_save_load_round_trip_and_auto_classes(tmp_path, attention_type):
    from transformers import AutoConfig, AutoModelForCausalLM

    model = tiny_model(attention_type, topic_names=["<unk>", "Sains"], context_names=["<unk>", "Di kelas"])
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"].endswith("RinganForCausalLM")
    shipped = ["modeling_ringan.py", "configuration_ringan.py", "modules.py", "mixer_linear.py", "mixer_delta.py"]
    for name in shipped + ["ops_linear_attention.py", "ops_delta_rule.py", "quantization.py", "fused_step.py"]:
        assert (tmp_path / name).exists(), name
    assert AutoConfig.from_pretrained(tmp_path).topic_names == ["<unk>", "Sains"]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is RinganForCausalLM
    ids = torch.randint(4, 99, (2, 25))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_fresh_process_remote_code_load_without_the_package(tmp_path, attention_type):
    model = tiny_model(attention_type)
    model.save_pretrained(tmp_path / "ckpt")
    ids = torch.randint(4, 99, (1, 9))
    with torch.no_grad():
        expected = model(ids).logits[0, -1].tolist()
    payload = run_without_ringan(
        f"""
        import json
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        ids = torch.tensor({ids.tolist()!r})
        with torch.no_grad():
            print(json.dumps({{"cls": type(model).__module__, "logits": model(ids).logits[0, -1].tolist()}}))
            model.generate(ids, max_new_tokens=3, do_sample=False)
        """,
        tmp_path,
    )
    assert "transformers_modules" in payload["cls"]
    torch.testing.assert_close(torch.tensor(payload["logits"]), torch.tensor(expected))


# ------------------------------------------------------------------------------------------- memory


MEMORY_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
from ringan import RinganConfig, RinganForCausalLM


def peak_kib():  # VmHWM: this process's own peak RSS (ru_maxrss would include the parent's peak)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


torch.set_num_threads(1)
length, segment = int(sys.argv[1]), int(sys.argv[2])
config = RinganConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                      num_topics=5, num_contexts=7, prefill_segment_size=segment)
model = RinganForCausalLM(config).eval()
ids = torch.randint(4, 99, (1, length))
with torch.no_grad():
    model(ids[:, :256], logits_to_keep=1)  # warm up allocator and kernels
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current RSS
    before = peak_kib()
    model(ids, logits_to_keep=1)
print(peak_kib() - before)
"""


def _peak_growth_kib(length: int, segment: int) -> int:
    from pathlib import Path

    script = MEMORY_SCRIPT.format(root=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run(
        [sys.executable, "-c", script, str(length), str(segment)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1])


def test_long_forward_memory_is_bounded_by_one_segment():
    """32k tokens with logits_to_keep=1 grow peak RSS by about what one 1k-token segment needs; the control
    (one segment as long as the input) needs many times more, so this test can fail."""
    segmented = _peak_growth_kib(32768, 1024)
    one_pass = _peak_growth_kib(32768, 32768)
    assert segmented < 16 * 1024, f"segmented prefill grew peak RSS by {segmented} KiB"
    assert one_pass > 3 * max(segmented, 1024), (segmented, one_pass)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_every_parameter_and_buffer_is_initialised_when_missing_from_the_checkpoint(attention_type, tmp_path):
    """transformers 5 builds the model on the meta device: whatever `_init_weights` misses comes back as garbage."""
    from safetensors.torch import save_file

    model = tiny_model(attention_type)
    model.save_pretrained(tmp_path)
    save_file({"lm_head.weight": model.lm_head.weight.detach().contiguous()}, str(tmp_path / "model.safetensors"))
    loaded = RinganForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight)
    for name, tensor in [*loaded.named_parameters(), *loaded.named_buffers()]:
        assert torch.isfinite(tensor).all(), name
        if name.startswith("model.conditioning.") and name.endswith("norm.weight"):  # text conditioning: small
            gain = CONDITION_GAIN * model.config.initializer_range * model.config.hidden_size**0.5
            torch.testing.assert_close(tensor, torch.full_like(tensor, gain), msg=name)
        elif name.endswith("norm.weight") or "layernorm" in name:
            assert torch.equal(tensor, torch.ones_like(tensor)), name
        elif name.endswith("decay_proj.bias") and attention_type == "gated":
            assert torch.equal(tensor, torch.zeros_like(tensor)), name
        elif name.endswith("decay_proj.bias"):  # Mamba2's dt init: softplus(bias) in [1e-3, 0.1]
            dt = torch.nn.functional.softplus(tensor)
            assert ((dt > 0.9e-3) & (dt < 0.11)).all(), name
        elif name.endswith("A_log"):
            assert ((tensor >= 0) & (tensor <= torch.log(torch.tensor(16.0)))).all(), name
        elif tensor.dim() == 2:
            assert 0.005 < tensor.std().item() < 1.0, name  # drawn from the initialiser, not zeros or memory
    fresh = RinganForCausalLM(loaded.config)
    for (name, buf), (_, want) in zip(loaded.named_buffers(), fresh.named_buffers()):
        torch.testing.assert_close(buf, want, msg=name)  # RoPE frequencies, retention decays
    ids = torch.randint(4, 99, (1, 10))
    assert torch.isfinite(loaded(ids).logits).all()


@pytest.mark.parametrize("gated", [False, True])
def test_mlp_matches_its_formula(gated):
    from ringan.modeling.modeling_ringan import RinganMLP

    torch.manual_seed(0)
    config = RinganConfig(vocab_size=99, hidden_size=32, intermediate_size=48, gated_mlp=gated, hidden_act="silu")
    mlp = RinganMLP(config)
    x = torch.randn(3, 32)
    up = x @ mlp.up_proj.weight.T
    hidden = torch.nn.functional.silu(x @ mlp.gate_proj.weight.T) * up if gated else torch.nn.functional.silu(up)
    torch.testing.assert_close(mlp(x), hidden @ mlp.down_proj.weight.T)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_padding_contract_right_padding_scores_and_bad_padding_is_refused(attention_type):
    """Right padding (the collator's) gives every row its own logits; a cache that read right padding, a
    left-padded continuation and a hole between tokens would each give wrong results silently: they are refused."""
    model = tiny_model(attention_type)
    torch.manual_seed(3)
    rows = [torch.randint(4, 99, (n,)) for n in (12, 7)]
    batch = torch.zeros(2, 12, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for i, r in enumerate(rows):
        batch[i, : len(r)], mask[i, : len(r)] = r, 1
    cond = conditioning(model, 2)
    with torch.no_grad():
        out = model(batch, attention_mask=mask, use_cache=True, **cond)
        for i, r in enumerate(rows):
            alone = model(r[None], **select_rows(cond, slice(i, i + 1))).logits[0]
            assert rel_err(out.logits[i, : len(r)], alone) < 1e-5
        assert out.cache.padded_rows.tolist() == [False, True]
        with pytest.raises(ValueError, match=r"cache of row\(s\) \[1\] read padding after their tokens"):
            model(torch.tensor([[5], [6]]), cache=out.cache, use_cache=True)
        first = model(batch[:1], use_cache=True, **select_rows(cond, slice(0, 1)))
        with pytest.raises(ValueError, match=r"row\(s\) \[0\] have padding between tokens"):  # left-padded continuation
            model(torch.tensor([[0, 7, 8]]), attention_mask=torch.tensor([[1] * 12 + [0, 1, 1]]), cache=first.cache)
        with pytest.raises(ValueError, match=r"row\(s\) \[1\] have padding between tokens"):  # a hole
            model(batch, attention_mask=torch.tensor([[1] * 12, [1, 1, 0, 1] + [0] * 8]))
