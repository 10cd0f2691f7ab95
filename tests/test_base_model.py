"""The shipped Ringan-base: it is in the package, loads offline by name, has its documented size, and scores what its
card records on the bundled sample (so a broken, truncated or swapped file fails here)."""

from __future__ import annotations

import json

import pytest
import torch

from ringan import RinganConfig, RinganForCausalLM
from ringan.base_model import BASE_NAME, INFO_FILE, base_model_info, base_model_path, resolve_model_name
from ringan.data import load_default_corpus, split_entries
from ringan.loading import load_model
from ringan.training import entry_to_examples, evaluate_examples

MAX_BYTES = 8_000_000  # the bound: int8 weights, config and tokenizer together


def test_the_base_ships_with_its_card_and_size():
    folder = base_model_path()
    assert resolve_model_name(BASE_NAME) == folder
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", INFO_FILE} <= names
    # its modeling code is the package's own (links; tests/test_interop.py): plain transformers loads it with
    # trust_remote_code, while `ringan` loads it with the installed classes and never runs a folder's code
    assert all((folder / n).is_symlink() for n in names if n.endswith(".py"))
    size = sum(p.stat().st_size for p in folder.iterdir())
    info = base_model_info()
    assert size <= MAX_BYTES, size
    assert (folder / "model.safetensors").stat().st_size == info["weights_bytes"]
    card = (folder / "README.md").read_text(encoding="utf-8")
    for source in ("prose-id.txt", "xpersona-id-valid.txt", "pretrain/dlg_indosmd.txt", "CC BY-SA 4.0", "MIT"):
        assert source in card
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization"]["bits"] == 8
    assert {ref.split(".")[0] + ".py" for ref in config["auto_map"].values()} <= names  # self-contained


def test_the_base_loads_offline_and_scores_its_recorded_sample(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    model, tok = load_model(resolve_model_name(BASE_NAME))
    info = base_model_info()
    assert isinstance(model, RinganForCausalLM) and not model.training
    assert sum(p.numel() for p in model.parameters()) > 0 and info["parameters"] > 6_000_000
    _, held_out = split_entries(load_default_corpus(), 0.1, seed=0)  # the sample named in ringan_base.json
    from ringan.data import LabelVocab

    examples = [x for e in held_out for x in entry_to_examples(e, tok, LabelVocab([]), LabelVocab([]), 1024)]
    bpb = evaluate_examples(model, examples)["bits_per_byte"]
    recorded = info["sample_bits_per_byte"]
    assert abs(bpb - recorded) <= 0.01 * recorded, (bpb, recorded)


def test_fine_tuning_starts_from_trainable_fp32_weights():
    model, _ = load_model(base_model_path(), for_training=True)
    assert model.training and model.config.quantization is None
    params = list(model.parameters())
    assert params and all(p.dtype == torch.float32 and p.requires_grad for p in params)
    int8, _ = load_model(base_model_path())
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    model.eval()
    with torch.no_grad():  # dequantized weights are the int8 ones: the same predictions up to rounding
        a, b = model(input_ids=ids).logits, int8(input_ids=ids).logits
    assert torch.allclose(a, b, atol=0.05 * float(b.abs().max())), float((a - b).abs().max())


@pytest.mark.parametrize("verb", ["generate"])
def test_the_base_answers_by_name(verb, capsys):
    from ringan.cli import main

    argv = [verb, "--model", BASE_NAME, "--topic", "Liburan", "--context", "Dua teman merencanakan liburan."]
    # torch: `auto` would export the base to ONNX first (tests/test_decoding.py tests that choice on a tiny model)
    turn = ["--turn", "Budi: Halo, mau liburan ke mana?", "--max-new-tokens", "6", "--no-stream", "--runtime", "torch"]
    assert main([*argv, *turn]) == 0
    assert "==== Topik: Liburan ====" in capsys.readouterr().out


def test_the_readme_conditioning_example_runs(capsys):
    """The README's Python example and the conditioning example in docs/python.md, run as written, against the
    shipped base."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for page, heading in (("README.md", "## Python"), ("docs/python.md", "## Conditioning on a Topik and Konteks")):
        text = (root / page).read_text(encoding="utf-8")
        block = re.search(re.escape(heading) + r"\n.*?```python\n(.*?)```", text, re.S)
        assert block, f"{page} has a Python example under {heading!r}"
        torch.manual_seed(0)
        exec(compile(block.group(1), page, "exec"), {})
        assert capsys.readouterr().out.strip()  # it printed a reply


def test_training_starts_from_the_base_by_default_and_the_card_names_it(tmp_path, capsys):
    from ringan.cli import main

    out = tmp_path / "run"
    argv = ["train", "--output", str(out), "--max-steps", "2", "--max-length", "128", "--batch-size", "2"]
    assert main([*argv, "--save-steps", "2", "--eval-steps", "2", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "dequantized from int8 to fp32 for training" in err
    card = (out / "model" / "README.md").read_text(encoding="utf-8")
    assert "| started from | fine-tuned from Ringan-base, shipped with the ringan package |" in card
    assert "base_model:" not in card  # "ringan-base" is no Hub id
    saved = json.loads((out / "model" / "config.json").read_text())
    base = json.loads((base_model_path() / "config.json").read_text())
    assert saved.get("quantization") is None and saved["attention_type"] == base["attention_type"]
    assert saved["vocab_size"] == base["vocab_size"]  # the base's tokenizer, not a new one
    # the conditioning dropout is this run's (the default), not the 0.1 the base was pre-trained with
    assert base["conditioning_dropout"] == 0.1 and saved["conditioning_dropout"] == RinganConfig.conditioning_dropout


def test_a_text_generation_pipeline_carries_the_conditioning():
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    tok = AutoTokenizer.from_pretrained(base_model_path())
    model = AutoModelForCausalLM.from_pretrained(base_model_path())
    encode = lambda text: tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]  # noqa: E731
    cond = {"topic_input_ids": encode("Liburan"), "context_input_ids": encode("Dua teman merencanakan liburan.")}
    prompt = "==== Topik: Liburan ====\n\nKonteks: Dua teman merencanakan liburan.\n\nBudi: Halo!\n\nSari:"
    piped = pipeline("text-generation", model=model, tokenizer=tok)(
        prompt, max_new_tokens=8, do_sample=False, return_full_text=False, **cond
    )[0]["generated_text"]
    ids = tok(prompt, return_tensors="pt")
    direct = model.generate(**ids, **cond, max_new_tokens=8, do_sample=False)
    assert piped == tok.decode(direct[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
