"""The lean decode loop (`ringan.decoding`) against `model.generate` and transformers' logits warpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import ATTENTION_TYPES, onnx_group, tiny_model
from transformers import RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from ringan.decoding import Decoder, Sampling, TorchStep, next_tokens


@pytest.mark.parametrize("attention_type", ATTENTION_TYPES)
@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_tokens_equal_generate_for_a_left_padded_batch(attention_type, penalty):
    model = tiny_model(attention_type)
    prompts = [torch.randint(4, 99, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (13, 5, 9)]
    got = Decoder(TorchStep(model)).generate(prompts, 24, Sampling(greedy=True, repetition_penalty=penalty))
    for prompt, tokens in zip(prompts, got):
        expected = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=24,
            do_sample=False,
            repetition_penalty=penalty,
            eos_token_id=None,
            pad_token_id=0,
        )
        assert tokens == expected[0, len(prompt) :].tolist()


def test_rows_stop_at_their_stop_token_and_leave_the_batch():
    model = tiny_model()
    prompts = [[5, 6, 7], [8, 9, 10, 11]]
    free = Decoder(TorchStep(model)).generate(prompts, 12, Sampling(greedy=True))
    stop = free[0][3]  # row 0's 4th token becomes a stop token
    stopped = Decoder(TorchStep(model), stop_ids=[stop]).generate(prompts, 12, Sampling(greedy=True))
    assert stopped[0] == free[0][: free[0].index(stop) + 1]
    # row 1 runs on alone (until it meets the stop token too) and is unaffected by row 0 leaving
    expected_1 = free[1][: free[1].index(stop) + 1] if stop in free[1] else free[1]
    assert stopped[1] == expected_1


def test_warping_matches_transformers_processors():
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    seen_ids = torch.randint(0, 50, (4, 6))
    seen = torch.zeros(4, 50, dtype=torch.bool).scatter_(1, seen_ids, True)
    sampling = Sampling(temperature=0.7, top_k=12, top_p=0.8, repetition_penalty=1.2)
    expected = RepetitionPenaltyLogitsProcessor(1.2)(seen_ids, logits.clone())
    for warper in (TemperatureLogitsWarper(0.7), TopKLogitsWarper(12), TopPLogitsWarper(0.8)):
        expected = warper(seen_ids, expected)
    allowed = torch.isfinite(expected)
    draws = torch.stack([next_tokens(logits, sampling, seen, torch.Generator().manual_seed(s)) for s in range(400)])
    assert allowed.gather(1, draws.T).all()  # never a token the warpers removed
    # the drawn frequencies follow the warped distribution
    probs = expected.softmax(-1)
    counts = torch.zeros(4, 50).scatter_add_(1, draws.T, torch.ones(4, 400)) / 400
    assert (counts - probs).abs().max() < 0.1
    assert torch.equal(next_tokens(logits, Sampling(greedy=True, repetition_penalty=1.2), seen), expected.argmax(-1))


def test_conditioning_passes_through_the_loop():
    model = tiny_model(conditioning="text")
    with torch.no_grad():
        model.model.conditioning.context_norm.weight.fill_(2.0)
    context = {"context_input_ids": torch.tensor([[11, 12, 13, 14]])}
    prompt = [[5, 6, 7, 8]]
    got = Decoder(TorchStep(model)).generate(prompt, 10, Sampling(greedy=True), conditioning=context)
    expected = model.generate(torch.tensor(prompt), **context, max_new_tokens=10, do_sample=False, eos_token_id=None)
    assert got[0] == expected[0, 4:].tolist()
    plain = Decoder(TorchStep(model)).generate(prompt, 10, Sampling(greedy=True))
    assert plain[0] != got[0]


@pytest.mark.parametrize("attention_type", onnx_group(ATTENTION_TYPES))
def test_onnx_back_end_equals_torch_and_continues_a_conversation(attention_type, tiny_onnx):
    """The ONNX Runtime back end of the lean loop: the same greedy tokens as the torch back end (70-token prompt:
    two prefill windows; text conditioning), and a conversation continued from its state equals one fed whole."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from ringan.decoding import OnnxStep

    model, folder, _ = tiny_onnx(attention_type)
    torch.manual_seed(5)
    prompt, more = torch.randint(4, 99, (70,)).tolist(), torch.randint(4, 99, (9,)).tolist()
    cond = {"topic_input_ids": torch.tensor([[7, 8, 9]]), "context_input_ids": torch.tensor([[10, 11, 12, 13]])}
    greedy = Sampling(greedy=True)
    runs = {}
    for name, backend in (("torch", TorchStep(model)), ("onnx", OnnxStep(folder))):
        decoder = Decoder(backend)
        first = decoder.generate([prompt], 6, greedy, conditioning=cond)[0]
        # the state has seen every token but the last generated one: feed it with the next turn
        continued = decoder.generate([first[-1:] + more], 6, greedy, state=decoder.state)[0]
        whole = Decoder(backend).generate([prompt + first + more], 6, greedy, conditioning=cond)[0]
        assert continued == whole, name
        runs[name] = (first, continued)
    assert runs["onnx"] == runs["torch"]


def test_empty_prompts_are_refused():
    with pytest.raises(ValueError, match="at least one token"):
        Decoder(TorchStep(tiny_model())).generate([[]], 4)


def test_batch_replies_from_a_prompts_file(trained_run, tmp_path, capsys):
    """`ringan generate --prompts`: every conversation gets a one-line reply, in input order, batched."""
    import json

    from ringan.cli import main
    from ringan.data import Turn, render_dialogue
    from ringan.decoding import Decoder, Sampling, TorchStep
    from ringan.loading import load_model
    from ringan.tokenization import end_of_turn_ids

    rows = [
        {
            "topic": "Kehendak Bebas",
            "context": "Ayu dan Reza di teras.",
            "turns": [["Ayu", "Halo Rez!"]],
            "speaker": "Reza",
        },
        {"topic": "Sains", "context": "Dua teman di kelas.", "turns": [], "speaker": "Dito"},
        {
            "topic": "Teknologi",
            "context": "Di kantor.",
            "turns": [["A", "Sudah makan?"], ["B", "Belum."]],
            "speaker": "A",
        },
    ]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "replies.jsonl"
    model_dir = trained_run / "model"
    args = ["generate", "--model", str(model_dir), "--prompts", str(prompts), "--output", str(out), "--batch-size", "2"]
    assert main([*args, "--greedy", "--max-new-tokens", "12"]) == 0
    assert "(runtime: torch (fused delta-rule step, fp32 weights" in capsys.readouterr().err  # says which path runs
    replies = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["speaker"] for r in replies] == ["Reza", "Dito", "A"]
    model, tok = load_model(model_dir)
    decoder = Decoder(TorchStep(model), stop_ids=end_of_turn_ids(tok), pad_token_id=tok.pad_token_id)
    for row, got in zip(rows, replies):  # each batched reply equals the same conversation decoded alone
        turns = [Turn(s, t) for s, t in row["turns"]]
        ids = tok(render_dialogue(row["topic"], row["context"], turns, row["speaker"]))["input_ids"]
        from ringan.commands.batch import _conditioning

        alone = decoder.generate(
            [ids], 12, Sampling(greedy=True, repetition_penalty=1.1), _conditioning(model, tok, [row])
        )
        text = " ".join(tok.decode(alone[0], skip_special_tokens=True).strip().split("\n")[0].split())
        assert got["reply"] == text and "\n" not in got["reply"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"topic": "x", "turns": []}\n', encoding="utf-8")
    assert main(["generate", "--model", str(model_dir), "--prompts", str(bad)]) == 2
    assert f"{bad}:1: expected" in capsys.readouterr().err


def test_the_runtime_choice_keeps_the_weight_format_and_says_which(tmp_path, monkeypatch, capsys):
    """`auto` (with ONNX Runtime installed) and `onnx` export a quantized checkpoint in its own format (int4
    here) once, into the cache, and reuse it; `torch` never exports; without a model folder `auto` is torch."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from ringan import RinganForCausalLM
    from ringan.conversion import quantize_folder
    from ringan.decoding import OnnxStep, make_backend

    monkeypatch.setenv("RINGAN_CACHE", str(tmp_path / "cache"))
    tiny_model().save_pretrained(tmp_path / "fp32")
    quantize_folder(tmp_path / "fp32", tmp_path / "int4", bits=4)
    model = RinganForCausalLM.from_pretrained(tmp_path / "int4").eval()
    backend, said = make_backend(model, tmp_path / "int4", "torch")
    assert isinstance(backend, TorchStep) and said.startswith("torch (fused delta-rule step, int4 weights")
    assert not (tmp_path / "cache").exists()
    backend, said = make_backend(model, tmp_path / "int4", "auto")
    assert isinstance(backend, OnnxStep) and said.startswith("onnx (int4, ")
    assert backend.runner.meta["quantize"] == "int4"
    assert "exporting the model to ONNX once" in capsys.readouterr().err
    again, said_again = make_backend(model, tmp_path / "int4", "onnx")  # the cached export, not a new one
    assert isinstance(again, OnnxStep) and said_again == said
    assert "exporting" not in capsys.readouterr().err
    backend, said = make_backend(model, None, "auto")
    assert isinstance(backend, TorchStep)


def test_auto_falls_back_to_torch_when_the_export_fails(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import ringan.conversion.onnx_export as onnx_export
    from ringan.decoding import make_backend

    def broken_export(model_dir, out_dir, quantize=None):
        Path(out_dir).mkdir(parents=True)
        raise RuntimeError("no exporter here")

    monkeypatch.setenv("RINGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(onnx_export, "export_onnx", broken_export)
    model = tiny_model()
    model.save_pretrained(tmp_path / "fp32")
    backend, said = make_backend(model, tmp_path / "fp32", "auto")
    assert isinstance(backend, TorchStep)
    assert "the ONNX export failed: RuntimeError: no exporter here" in said
    assert not list((tmp_path / "cache").rglob("*.tmp*"))  # the half-written export is gone
    with pytest.raises(RuntimeError, match="no exporter here"):  # asked for by name: the error itself
        make_backend(model, tmp_path / "fp32", "onnx")
