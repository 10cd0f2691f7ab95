"""Conversions: weight-only int8/int4 quantization (save/load, remote code, sizes), ONNX export + ORT generation,
and the import of the founding document's reference model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fresh_process import run_without_ringan
from helpers import ATTENTION_TYPES, conditioning, onnx_group, select_rows, tiny_model
from safetensors.torch import load_file
from torch import nn

import ringan  # noqa: F401  (registers the auto classes)
from ringan import RinganConfig, RinganForCausalLM
from ringan.conversion import convert_seed_checkpoint, quantize_folder
from ringan.modeling.quantization import (
    QuantizedEmbedding,
    QuantizedLinear,
    dequantize_model_,
    dequantize_weight,
    quantize_model_,
    quantize_weight,
)

# ------------------------------------------------------------------------------------------ kernels


@pytest.mark.parametrize("bits,group_size", [(8, 0), (8, 32), (4, 32), (4, 0)])
def test_quantize_dequantize_round_trip_error(bits, group_size):
    torch.manual_seed(0)
    w = torch.randn(7, 40) * 0.05  # 40 columns: not a multiple of 32, so the last group is padded
    q, scales = quantize_weight(w, bits, group_size)
    assert q.dtype == (torch.int8 if bits == 8 else torch.uint8) and scales.dtype == torch.float16
    back = dequantize_weight(q, scales, bits, group_size, cols=40)
    assert back.shape == w.shape and back.dtype == torch.float32
    group = group_size or 40
    step = scales.float().abs().repeat_interleave(group, dim=1)[:, :40]
    if bits == 8:
        assert ((back - w).abs() <= step * 0.5 + 1e-7).all()
    else:  # clipping is searched per group: never worse than plain absmax scaling (peak -> -8)
        padded = torch.nn.functional.pad(w, (0, -40 % group)).view(7, -1, group)
        peak = padded.gather(-1, padded.abs().argmax(-1, keepdim=True))
        plain_scale = (peak / -8).half().float()
        plain = (torch.round(padded / plain_scale).clamp(-8, 7) * plain_scale).view(7, -1)[:, :40]
        assert ((back - w) ** 2).sum() <= ((plain - w) ** 2).sum() + 1e-9
        assert ((back - w).abs() <= step * 3).all()
        assert q.shape == (7, (40 + (-40 % group)) // 2)


def test_dequantized_weight_is_cached_once_and_never_saved():
    model = quantize_model_(tiny_model(), bits=4, group_size=32)
    head = model.lm_head
    assert isinstance(head, QuantizedLinear) and isinstance(model.model.embed_tokens, QuantizedEmbedding)
    ids = torch.randint(4, 99, (1, 6))
    with torch.no_grad():
        model(ids)
        first = head.dequantize()
        model(ids)
    assert head.dequantize() is first  # the same fp32 tensor: no per-step dequantization
    keys = set(model.state_dict())
    assert "lm_head.qweight" in keys and "lm_head.scales" in keys
    # every bias-free Linear and every Embedding is quantized; only the tiny biased gates (beta/decay: one output
    # per head) keep float weights
    floats = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    assert all(model.get_submodule(n).bias is not None and model.get_submodule(n).out_features <= 8 for n in floats)
    # new codes (a load) invalidate the cache
    with torch.no_grad():
        head.scales.mul_(2)
    torch.testing.assert_close(head.dequantize(), first * 2)


@pytest.mark.parametrize("bits,group_size", [(8, 0), (4, 32), (4, 64)])
def test_cpu_kernels_keep_weights_quantized_and_match_the_dequantized_weight(bits, group_size):
    torch.manual_seed(0)
    linear = nn.Linear(256, 64, bias=False)
    module = QuantizedLinear.from_linear(linear, bits, group_size)
    x = torch.randn(5, 256)
    expected = x @ module.dequantize(torch.float32).T
    module._dequantized = None
    with torch.no_grad():
        got = module(x)
    assert module._dequantized is None  # no float copy of the weight was made
    assert module._kernel_weight is not None  # the kernel path ran
    kernel_bytes = sum(t.numel() * t.element_size() for t in module._kernel_weight[1])
    assert kernel_bytes < 256 * 64 * 4 / (3 if bits == 8 else 5)  # a fraction of the fp32 weight
    assert rel_err_max(got, expected) < 1e-2  # bf16 activations (relative error ~3e-3)
    with torch.enable_grad():  # training needs gradients: the dequantized path
        torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)


def test_quantized_embedding_dequantizes_only_the_rows_it_looks_up():
    torch.manual_seed(0)
    module = QuantizedEmbedding.from_embedding(nn.Embedding(50, 32), bits=8)
    ids = torch.tensor([[3, 7, 3], [49, 0, 1]])
    with torch.no_grad():
        got = module(ids)
    assert module._dequantized is None
    torch.testing.assert_close(got, module.dequantize()[ids])


def rel_err_max(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


# ----------------------------------------------------------------------------- save / load / generate


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_checkpoint_loads_with_auto_class_and_generates(tmp_path, bits, attention_type):
    from transformers import AutoModelForCausalLM

    model = tiny_model(attention_type)
    model.save_pretrained(tmp_path / "fp32")
    (tmp_path / "fp32" / "README.md").write_text("# tiny\n")
    report = quantize_folder(tmp_path / "fp32", tmp_path / "q", bits=bits)
    assert report["quantization"] == {"bits": bits, "group_size": 0 if bits == 8 else 32}
    assert "quantization.py" in report["files"] and report["total_bytes"] == sum(report["files"].values())
    assert (tmp_path / "q" / "README.md").read_text().startswith("# tiny")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["quantization"] == report["quantization"] and "quantization_config" not in config
    tensors = load_file(tmp_path / "q" / "model.safetensors")
    assert tensors["lm_head.qweight"].dtype == (torch.int8 if bits == 8 else torch.uint8)
    assert tensors["model.embed_tokens.scales"].dtype == torch.float16

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "q").eval()
    assert type(loaded) is RinganForCausalLM and isinstance(loaded.lm_head, QuantizedLinear)
    ids = torch.randint(4, 99, (2, 25))
    cond = conditioning(model, 2)
    first = select_rows(cond, slice(0, 1))
    with torch.no_grad():
        got = loaded(ids, **cond).logits
        want = model(ids, **cond).logits
        # a float model holding the dequantized weights: exactly, but for the kernels' bf16 activations
        reference = dequantize_model_(quantize_model_(tiny_model(attention_type), bits)).eval()
        expected = reference(ids, **cond).logits
        assert rel_err_max(got, expected) < 2e-2
        # close to fp32 (random tiny weights and retention's per-head norm amplify the noise: a loose bound)
        cosine = torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0)
        assert cosine > (0.99 if bits == 8 else 0.9), float(cosine)
        generated = loaded.generate(ids[:1, :7], **first, max_new_tokens=6, do_sample=False, eos_token_id=None)
        seq = ids[:1, :7]
        for _ in range(6):  # the cached path equals recomputing without a cache
            nxt = loaded(seq, **first, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(generated, seq)


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
def test_fresh_process_loads_quantized_checkpoint_without_the_package(tmp_path, attention_type):
    model = quantize_model_(tiny_model(attention_type), bits=4, group_size=32)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "quantization.py").exists()
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
            logits = model(ids).logits[0, -1].tolist()
            model.generate(ids, max_new_tokens=3, do_sample=False)
        print(json.dumps({{"head": type(model.lm_head).__module__, "logits": logits}}))
        """,
        tmp_path,
    )
    assert "transformers_modules" in payload["head"] and payload["head"].endswith("quantization")
    torch.testing.assert_close(torch.tensor(payload["logits"]), torch.tensor(expected))


def test_default_config_sizes_on_disk(tmp_path):
    torch.manual_seed(0)
    RinganForCausalLM(RinganConfig()).save_pretrained(tmp_path / "fp32")
    int8 = quantize_folder(tmp_path / "fp32", tmp_path / "int8", bits=8)
    int4 = quantize_folder(tmp_path / "fp32", tmp_path / "int4", bits=4)
    on_disk = {name: sum(p.stat().st_size for p in (tmp_path / name).iterdir()) for name in ("int8", "int4")}
    assert on_disk == {"int8": int8["total_bytes"], "int4": int4["total_bytes"]}  # no tokenizer here
    assert int8["total_bytes"] < 8e6, int8
    assert int4["total_bytes"] < 5e6, int4
    assert int8["source_total_bytes"] > 26e6


def test_quantizing_a_quantized_folder_is_refused(tmp_path):
    quantize_model_(tiny_model(), bits=8).save_pretrained(tmp_path / "q")
    with pytest.raises(ValueError, match="already quantized"):
        quantize_folder(tmp_path / "q", tmp_path / "again", bits=4)


# -------------------------------------------------------------------------------------------- ONNX


def _external_blocks(path) -> set[tuple[str, str]]:
    """(offset, length) of every initializer of an ONNX graph stored in its external data file."""
    import onnx

    blocks = set()
    for tensor in onnx.load(str(path), load_external_data=False).graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entry = {e.key: e.value for e in tensor.external_data}
            blocks.add((entry["offset"], entry["length"]))
    return blocks


@pytest.mark.parametrize("attention_type", onnx_group(ATTENTION_TYPES))
def test_onnx_greedy_generation_equals_pytorch(tiny_onnx, attention_type):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from ringan.conversion import onnx_generate
    from ringan.conversion.onnx_runtime import OnnxRingan

    model, folder, report = tiny_onnx(attention_type)
    assert {"prefill.onnx", "decode.onnx", "weights.bin"} <= set(report["files"])
    assert report["check"]["max_abs_logit_diff"] < 1e-4
    # the decode graph (the fused step's concatenated weights for the delta-rule mixers) shares every weight
    # byte with the prefill graph: nothing is stored twice
    assert _external_blocks(folder / "decode.onnx") <= _external_blocks(folder / "prefill.onnx")
    runner = OnnxRingan(folder)
    # 70 tokens: the prompt crosses the 64-token prefill window; with and without the conversation's conditioning
    for prompt_len, with_conditioning in [(11, False), (70, True)]:
        prompt = torch.randint(4, 99, (1, prompt_len))
        cond = conditioning(model, 1, seed=prompt_len) if with_conditioning else {}
        with torch.no_grad():
            expected = model.generate(prompt, **cond, max_new_tokens=10, do_sample=False, eos_token_id=None)
        # batch 1, as plain values: ids as ints, token lists (and their masks) as lists
        plain = {k: v[0].tolist() if v.dim() > 1 else int(v[0]) for k, v in cond.items()}
        got = onnx_generate(runner, prompt, 10, stop_at_eos=False, **plain)
        assert got == expected[0].tolist()


@pytest.mark.parametrize(
    "attention_type,quantize,max_relative_error",
    # mean |logit error| / logit spread, measured ≈ 0.01 (int8) and ≈ 0.1 (int4) on these tiny models
    [(ATTENTION_TYPES[0], "int8", 0.03), (ATTENTION_TYPES[0], "int4", 0.25), ("linear", "int8", 0.03)],
)
def test_quantized_onnx_graphs_keep_weights_quantized_and_track_pytorch(
    tmp_path, attention_type, quantize, max_relative_error
):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnx

    from ringan.conversion import export_onnx
    from ringan.conversion.onnx_runtime import OnnxRingan

    model = tiny_model(attention_type)
    model.save_pretrained(tmp_path / "fp32")
    report = export_onnx(tmp_path / "fp32", tmp_path / "onnx", quantize)
    assert report["quantize"] == quantize and report["skipped"] is None
    bits = {"int8": 8, "int4": 4}[quantize]
    for name in ("prefill.onnx", "decode.onnx", "condition.onnx"):
        graph = onnx.load(str(tmp_path / "onnx" / name)).graph
        nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
        attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nbits]
        # q/k/v/gate, beta/decay or the linear mixers' projections, output, MLP and the LM head: all quantized
        # (the condition graph: the Topik and Konteks projections)
        assert len(nbits) >= (2 if name == "condition.onnx" else 1 + 4 * model.config.num_hidden_layers), name
        assert all(a["bits"] == bits and a["accuracy_level"] == 4 for a in attrs), attrs
        # no float weight matrix left (the embedding table included; the convolution's [channels, 4] taps are
        # not a matrix): the weights stay quantized in memory
        floats = [
            t.name
            for t in graph.initializer
            if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2 and min(t.dims) >= 16
        ]
        assert not floats, (name, floats)
    assert _external_blocks(tmp_path / "onnx" / "decode.onnx") <= _external_blocks(tmp_path / "onnx" / "prefill.onnx")

    prompt = torch.randint(4, 99, (1, 80), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(prompt).logits[0]
    runner = OnnxRingan(tmp_path / "onnx")
    # the prompt through prefill (64-token windows), then every position again through decode, token by token
    prefilled, _ = runner.feed(prompt[0].tolist(), runner.initial_state())
    state, decoded = runner.initial_state(), []
    for token in prompt[0].tolist():
        logits, state = runner.feed([token], state)
        decoded.append(logits)
    decoded = torch.from_numpy(np.stack(decoded))
    spread = expected.std().item()
    assert (decoded - expected).abs().mean().item() / spread < max_relative_error
    assert (torch.from_numpy(prefilled) - expected[-1]).abs().mean().item() / spread < max_relative_error


# --------------------------------------------------------------------------------------- seed import


class RichEmbedding(nn.Module):
    """The founding document's input layer (chapter 3)."""

    def __init__(self, vocab_size, embed_dim, num_topics, num_contexts):
        super().__init__()
        self.token_embed = nn.Embedding(vocab_size, embed_dim)
        self.topic_embed = nn.Embedding(num_topics, embed_dim)
        self.context_embed = nn.Embedding(num_contexts, embed_dim)


class MyGenerativeModel(nn.Module):
    """The founding document's reference model (chapter 3), at small sizes; only its parameters matter here."""

    def __init__(self, vocab_size, embed_dim, num_heads, num_layers, num_topics, num_contexts, ffn):
        super().__init__()
        self.rich_embedding_layer = RichEmbedding(vocab_size, embed_dim, num_topics, num_contexts)
        layer = nn.TransformerDecoderLayer(
            d_model=embed_dim, nhead=num_heads, dim_feedforward=ffn, dropout=0.1, batch_first=True
        )
        self.decoder_model = nn.TransformerDecoder(layer, num_layers)
        self.prediction_layer = nn.Linear(embed_dim, vocab_size)


def test_seed_checkpoint_converts_to_a_warm_start(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    seed = MyGenerativeModel(97, 32, 4, 3, 6, 9, ffn=128)
    torch.save(seed.state_dict(), tmp_path / "seed.pt")
    report = convert_seed_checkpoint(tmp_path / "seed.pt", tmp_path / "out")
    printed = capsys.readouterr().out
    cfg = report["config"]
    assert (cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]) == (
        97,
        32,
        3,
        128,
    )
    assert (cfg["num_topics"], cfg["num_contexts"], cfg["num_attention_heads"]) == (6, 9, 4)

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    emb = seed.rich_embedding_layer
    assert torch.equal(loaded.model.embed_tokens.weight, emb.token_embed.weight)
    assert torch.equal(loaded.model.conditioning.embed_topics.weight, emb.topic_embed.weight)
    assert torch.equal(loaded.model.conditioning.embed_contexts.weight, emb.context_embed.weight)
    assert torch.equal(loaded.lm_head.weight, seed.prediction_layer.weight)
    layer = seed.decoder_model.layers[1]
    q, k, v = layer.self_attn.in_proj_weight.chunk(3)
    attn = loaded.model.layers[1].self_attn
    assert torch.equal(attn.q_proj.weight, q) and torch.equal(attn.k_proj.weight, k)
    assert torch.equal(attn.v_proj.weight, v) and torch.equal(attn.o_proj.weight, layer.self_attn.out_proj.weight)
    assert torch.equal(loaded.model.layers[1].mlp.up_proj.weight, layer.linear1.weight)
    assert loaded.config.hidden_act == "relu" and "warm" in loaded.config.warm_start["note"].lower()

    unmapped = report["unmapped"]
    for i in range(3):
        assert f"decoder_model.layers.{i}.multihead_attn.in_proj_weight" in unmapped
        for norm in ("norm1", "norm2", "norm3"):
            assert f"decoder_model.layers.{i}.{norm}.weight" in unmapped
            assert f"decoder_model.layers.{i}.{norm}.bias" in unmapped
    assert "prediction_layer.bias" in unmapped and report["head_bias"]["centred_max_abs"] > 0
    assert (
        "multihead_attn" in printed
        and "norm3" in printed
        and "Fine-tune" in (tmp_path / "out" / "README.md").read_text()
    )


def test_onnx_generate_stops_at_the_end_of_the_turn_and_speaks_text(tmp_path, capfd):
    """Before: `onnx_generate` stopped only at `</s>`, ran past the end of the turn into a new speaker, and returned
    an ndarray; the int8 export printed ONNX Runtime's pre-processing advice three times."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from transformers import AutoTokenizer, GenerationConfig

    from ringan.base_model import base_model_path
    from ringan.conversion import export_onnx, onnx_generate
    from ringan.conversion.onnx_runtime import OnnxRingan
    from ringan.tokenization import encode_text, end_of_turn_ids

    tok = AutoTokenizer.from_pretrained(base_model_path())  # a real tokenizer, saved with the model
    model = tiny_model(ATTENTION_TYPES[0], vocab_size=len(tok))
    prompt = list(range(5, 16))
    with torch.no_grad():  # fp32 greedy: the 4th generated token plays a saved end-of-turn id
        free = model.generate(torch.tensor([prompt]), max_new_tokens=4, do_sample=False, eos_token_id=None)[0]
    stop = int(free[len(prompt) + 3])
    stops = [model.config.eos_token_id, stop, *end_of_turn_ids(tok)]  # `</s>`, every newline token, and `stop`
    model.save_pretrained(tmp_path / "fp32")
    tok.save_pretrained(tmp_path / "fp32")
    GenerationConfig(eos_token_id=stops).save_pretrained(tmp_path / "fp32")
    report = export_onnx(tmp_path / "fp32", tmp_path / "onnx", quantize="int8")
    assert report["files"]
    assert "pre-processing before quantization" not in "".join(capfd.readouterr())
    runner = OnnxRingan(tmp_path / "onnx")
    unstopped = runner.generate(prompt, 8, stop_at_eos=False)
    stopped = onnx_generate(runner, prompt, 8)
    # the int8 graphs follow the fp32 model's first tokens, and the reply ends at the first saved end-of-turn id
    end = next((i for i in range(len(prompt), len(unstopped)) if unstopped[i] in stops), len(unstopped))
    assert end <= len(prompt) + 3, (unstopped, stop)
    assert isinstance(stopped, list) and stopped == unstopped[: end + 1]
    # text in, the reply's text out, with the folder's tokenizer: it ends before the newline that ends the turn
    text = "==== Topik: Kopi ====\n\nKonteks: Budi dan Sari ngobrol.\n\nBudi: Halo!\n\nSari:"
    reply = onnx_generate(runner, text, 30)
    ids = encode_text(tok, text, add_special_tokens=False)["input_ids"]
    generated = runner.generate(ids, 30, stop_at_eos=False)[len(ids) :]
    cut = next((i for i, t in enumerate(generated) if t in stops), len(generated))
    assert isinstance(reply, str) and "\n" not in reply
    assert reply == tok.decode(generated[:cut], skip_special_tokens=True).strip()
