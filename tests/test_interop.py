"""The shipped base with the tools a Hugging Face user reaches for: plain transformers without `import ringan`,
parameter counts, the Trainer/TRL on quantized weights, PEFT LoRA, lm-eval. TRL, PEFT and lm-eval tests skip when
those packages are absent."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

import ringan
from ringan.base_model import base_model_path
from ringan.fresh_process import run_python_without_ringan
from ringan.modeling.quantization import quantize_model_

MODELING_DIR = Path(ringan.__file__).parent / "modeling"
PROMPT = (
    "==== Topik: Liburan ke Bali ====\n\nKonteks: Budi dan Sari merencanakan liburan.\n\nBudi: Kita naik apa?\n\nSari:"
)


@pytest.fixture(scope="module")
def base():
    return ringan.RinganForCausalLM.from_pretrained(base_model_path()).eval()


def test_base_ships_the_code_it_loads_with():
    """`trust_remote_code` loads the base's modeling files: links to the package's own (a wheel holds copies), so
    they can never drift from the code `import ringan` runs."""
    shipped = sorted(p.name for p in base_model_path().glob("*.py"))
    package = sorted(p.name for p in MODELING_DIR.glob("*.py") if p.name not in ("__init__.py", "naive.py"))
    assert shipped == package
    stale = [n for n in shipped if (base_model_path() / n).read_bytes() != (MODELING_DIR / n).read_bytes()]
    assert not stale, f"ringan/base/{stale}: not the package's modeling code"


def test_push_of_the_base_uploads_its_code(capsys):
    """Before: `ringan push --model base` was refused ("missing modeling_ringan.py")."""
    from ringan.commands.hub import push

    push(model="base", repo_id="someone/ringan-base", dry_run=True)
    out = capsys.readouterr().out
    for name in ("modeling_ringan.py", "configuration_ringan.py", "model.safetensors", "tokenizer.json", "README.md"):
        assert f"  {name} " in out, name


def test_base_loads_and_generates_without_ringan(base):
    code = f"""
from transformers import AutoModelForCausalLM, AutoTokenizer
folder = sys.argv[1]
tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
ids = tok({PROMPT!r}, return_tensors="pt", add_special_tokens=False)
out = model.generate(**ids, max_new_tokens=6, do_sample=False)
print(type(model).__module__, model.num_parameters(), out[0, ids["input_ids"].shape[1]:].tolist())
"""
    with tempfile.TemporaryDirectory() as cwd:
        result = run_python_without_ringan(
            code, str(base_model_path()), cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300
        )
    assert result.returncode == 0, result.stderr[-3000:]
    module, count, new_tokens = result.stdout.strip().split(" ", 2)
    assert module.startswith("transformers_modules.") and int(count) == base.num_parameters()
    tok = ringan_tokenizer()
    ids = tok(PROMPT, return_tensors="pt", add_special_tokens=False)["input_ids"]
    expected = base.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1] :].tolist()
    assert eval(new_tokens) == expected  # the remote code computes what the package computes


def ringan_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model_path())


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_models_count_their_weights(bits):
    config = ringan.RinganConfig()
    torch.manual_seed(0)
    model = ringan.RinganForCausalLM(config)
    floats = model.num_parameters()
    float_embedding_free = model.num_parameters(exclude_embeddings=True)
    float_bytes = model.get_memory_footprint()
    quantize_model_(model, bits=bits)
    assert model.num_parameters() == floats
    assert model.num_parameters(exclude_embeddings=True) == float_embedding_free
    assert model.num_parameters(only_trainable=True) == sum(p.numel() for p in model.parameters())
    assert model.get_memory_footprint() < float_bytes / (3 if bits == 8 else 5)
    assert f"bits={bits}" in repr(model)


def test_base_parameter_count_is_the_cards(base):
    from ringan.base_model import base_model_info

    assert base.num_parameters() == base_model_info()["parameters"]


def _sft_batches(tok, n: int = 4):
    text = "==== Topik: Kopi ====\n\nKonteks: Budi dan Sari ngobrol soal kopi.\n\nBudi: Kamu suka kopi?\n\nSari: Suka banget.\n\n"
    return [tok(text)["input_ids"] for _ in range(n)]


def test_trainer_refuses_quantized_weights_and_trains_them_dequantized(tmp_path):
    """Before: the Trainer on Ringan-base trained its 12,184 norm weights and nothing else, silently."""
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    tok = ringan_tokenizer()
    data = Dataset.from_dict({"input_ids": _sft_batches(tok)})
    collator = DataCollatorForLanguageModeling(tok, mlm=False)
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to=[], save_strategy="no"
    )
    model = ringan.RinganForCausalLM.from_pretrained(base_model_path())
    with pytest.raises(ValueError, match=r"stored in int8.*model\.dequantize\(\)"):
        Trainer(model=model, args=args, train_dataset=data, data_collator=collator).train()
    model.dequantize()
    assert model.config.quantization is None
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    Trainer(model=model, args=args, train_dataset=data, data_collator=collator).train()
    assert model.num_parameters(only_trainable=True) == model.num_parameters()
    changed = sum(p.numel() for n, p in model.named_parameters() if not torch.equal(p, before[n]))
    assert changed > 0.9 * model.num_parameters()  # the weights learn, not only the norms


def test_trl_sft_trainer_on_the_base(tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    tok = ringan_tokenizer()
    text = tok.decode(_sft_batches(tok, 1)[0])
    data = Dataset.from_dict({"text": [text] * 4})
    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
    )
    model = ringan.RinganForCausalLM.from_pretrained(base_model_path())
    with pytest.raises(ValueError, match="dequantize"):
        trl.SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok).train()
    model.dequantize()
    before = model.lm_head.weight.detach().clone()
    trl.SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok).train()
    assert not torch.equal(before, model.lm_head.weight)


def test_peft_lora_on_the_dequantized_base_saves_reloads_and_merges(tmp_path):
    peft = pytest.importorskip("peft")
    tok = ringan_tokenizer()
    ids = torch.tensor(_sft_batches(tok, 2))
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    model = peft.get_peft_model(ringan.RinganForCausalLM.from_pretrained(base_model_path()).dequantize(), config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < 0.01 * model.num_parameters()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        base_logits = ringan.RinganForCausalLM.from_pretrained(base_model_path()).eval()(input_ids=ids).logits
    assert (adapted - base_logits).abs().max() > 1e-3  # the adapter changed something
    model.save_pretrained(tmp_path / "adapter")
    fresh = ringan.RinganForCausalLM.from_pretrained(base_model_path()).dequantize()
    reloaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, adapted)
        merged = reloaded.merge_and_unload()
        torch.testing.assert_close(merged(input_ids=ids).logits, adapted, atol=1e-4, rtol=1e-4)


def test_lm_eval_loglikelihood_and_rolling_perplexity(base):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(base_model_path()), trust_remote_code=True, batch_size=2, device="cpu")
    context, continuation = "Budi: Halo, apa kabar?\n\nSari:", " Baik, kamu gimana?"
    [(score, _)] = lm.loglikelihood([Instance("loglikelihood", {}, (context, continuation), 0)])
    [rolling] = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (context + continuation,), 0)])
    # the reference: the package's own model, scored token by token (lm-eval encodes with the tokenizer's BOS)
    tok = ringan_tokenizer()
    ctx = tok(context)["input_ids"]
    full = tok(context + continuation)["input_ids"]
    assert full[0] == tok.bos_token_id
    with torch.no_grad():
        logprobs = torch.log_softmax(base(torch.tensor([full])).logits[0].double(), -1)
    picked = [logprobs[i - 1, full[i]].item() for i in range(1, len(full))]
    assert score == pytest.approx(sum(picked[len(ctx) - 1 :]), abs=1e-3)
    # rolling: every token of the encoded text (its BOS included) after lm-eval's prefix token
    with torch.no_grad():
        prefixed = torch.log_softmax(base(torch.tensor([[lm.prefix_token_id, *full]])).logits[0].double(), -1)
    expected = sum(prefixed[i, token].item() for i, token in enumerate(full))
    assert rolling == pytest.approx(expected, abs=1e-3)


def test_chat_and_generate_with_the_base_as_the_readme_writes_them(tmp_path):
    """Before: `ringan chat --model base` stopped at "this model knows no topics: pass --topic"."""
    from cli_helpers import run_cli

    chat = run_cli(
        ["chat", "--model", "base", "--max-new-tokens", "8", "--runtime", "torch"], cwd=tmp_path, stdin="halo\n/quit\n"
    )
    assert chat.returncode == 0, chat.stderr[-2000:]
    from ringan.defaults import DEFAULT_TOPIC

    assert f"Topik: {DEFAULT_TOPIC}" in chat.stdout and "pass --topic" in chat.stderr
    generate = run_cli(
        [
            "generate",
            "--model",
            "base",
            "--turn",
            "Budi: Mau ke mana kita?",
            "--max-new-tokens",
            "8",
            "--runtime",
            "torch",
        ],
        cwd=tmp_path,
    )
    assert generate.returncode == 0, generate.stderr[-2000:]
    assert "Budi: Mau ke mana kita?" in generate.stdout


def test_train_picks_the_measured_fine_tuning_schedule_from_a_model_and_its_own_for_a_new_one():
    """Before: `ringan train --data my.txt` fine-tuned the base at a new model's 3e-3 (no better than no training)."""
    from ringan.commands.train import (
        FINE_TUNE_EPOCHS,
        FINE_TUNE_LEARNING_RATE,
        NEW_MODEL_EPOCHS,
        NEW_MODEL_LEARNING_RATE,
        TrainOptions,
        epochs,
        learning_rate,
    )

    assert FINE_TUNE_LEARNING_RATE < NEW_MODEL_LEARNING_RATE
    base, new = TrainOptions(init_from="base"), TrainOptions(init_from="none")
    assert (learning_rate(base), epochs(base)) == (FINE_TUNE_LEARNING_RATE, FINE_TUNE_EPOCHS)
    assert (learning_rate(new), epochs(new)) == (NEW_MODEL_LEARNING_RATE, NEW_MODEL_EPOCHS)
    given = TrainOptions(init_from="base", learning_rate=5e-4, epochs=3)
    assert (learning_rate(given), epochs(given)) == (5e-4, 3)
