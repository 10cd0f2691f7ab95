"""Every CLI verb on tiny configs: train, eval, generate, chat (with session resume), push (mocked Hub), config
files, kill-and-resume, fine-tuning (a quantized model too), where verbs find a model, and what the README and
the model card promise. Bad input is `test_bad_inputs.py`'s table; run folders and 2 processes `test_runs.py`."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import ROOT, TINY, one_line_error, run_cli
from safetensors.torch import load_file

from ringan.cli import main
from ringan.commands import VERBS
from ringan.data import load_default_corpus, write_dialogues


def run_train_killed_at_step(step: int, args: list[str]):
    """`ringan train ARGS` in a subprocess that SIGKILLs itself right after `step` (the callback is injected
    through the Python API; the package has no test hook)."""
    script = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from helpers import KillAtStepCallback\n"
        "from ringan.cli import parse_command_line\n"
        "from ringan.commands.train import train\n"
        "_, options = parse_command_line(['train', *sys.argv[1:]])\n"
        f"train(options, callbacks=[KillAtStepCallback({step})])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def read_metrics(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(trained_run) -> Path:
    return trained_run


def test_help_lists_every_verb(capsys):
    assert main([]) == 0
    text = capsys.readouterr().out
    for verb in [
        "tokenizer",
        "train",
        "eval",
        "generate",
        "chat",
        "push",
        "quantize",
        "export",
        "convert",
        "quickstart",
    ]:
        assert verb in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    assert "--resume" in help_text and "restores optimizer" in help_text  # docstrings are the help
    with pytest.raises(SystemExit):
        main(["quickstart", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    # its dialogue's default topic is a training entry's (train_entries[0]), and the help says so
    assert "the first topic of the training split" in help_text and "held-out topic" not in help_text


def test_tokenizer_verb(tmp_path, capsys):
    assert main(["tokenizer", "--output", str(tmp_path / "tok"), "--vocab-size", "500"]) == 0
    assert "characters/token" in capsys.readouterr().out
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert len(tok) <= 500 and tok.pad_token_id == 0


def test_train_saves_a_complete_model_with_card_and_metrics(trained):
    model_dir = trained / "model"
    for name in [
        "config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md",
        "modeling_ringan.py", "topic_contexts.json", "chat_template.jinja",
    ]:  # fmt: skip
        assert (model_dir / name).is_file(), name
    config = json.loads((model_dir / "config.json").read_text())
    assert config["topic_names"][0] == "<unk>" and len(config["topic_names"]) == 41  # 40 training topics + unknown
    rows = read_metrics(trained / "metrics.csv")
    evals = [r for r in rows if r.get("eval_perplexity")]
    assert len(evals) >= 2 and all(float(r["eval_bits_per_byte"]) > 0 for r in evals)
    assert any(r.get("tokens_per_second") for r in rows)
    card = (model_dir / "README.md").read_text()
    assert "trust_remote_code=True" in card and "perplexity" in card and config["topic_names"][1] in card
    assert sorted(p.name for p in trained.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    assert not (trained / ".staging").exists()
    # plain generate() samples as `ringan generate` does by default
    from ringan.commands.generate import GenerateOptions

    saved, cli = json.loads((model_dir / "generation_config.json").read_text()), GenerateOptions()
    assert saved["do_sample"] is True and not cli.greedy
    for name in ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty"):
        assert saved[name] == getattr(cli, name), name
    # keep-best: the best validation loss seen is on disk, and the final model is at least that good
    best = json.loads((trained / "best" / "best.json").read_text())
    assert best["eval_loss"] == pytest.approx(min(float(r["eval_loss"]) for r in evals[:-1]))
    assert float(evals[-1]["eval_loss"]) <= best["eval_loss"] + 1e-6


def test_eval_verb_overall_and_per_speaker(trained, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(trained / "model"), "--json-output", str(out)]) == 0
    printed = capsys.readouterr()
    assert "perplexity" in printed.out and "bits/byte" in printed.out
    n_entries = len(load_default_corpus())
    # before: 53 s without a word on 484 entries; now a bar per pass, counting entries for the per-speaker one
    assert "eval:" in printed.err and f"eval per speaker:   0%|          | 0/{n_entries}" in printed.err
    result = json.loads(out.read_text())
    speakers = result["per_speaker"]
    assert "(Topik/Konteks)" in speakers and "Kiann" in speakers
    # the per-speaker pass reads exactly the overall pass's windows: every token once, the same summed loss
    assert sum(s["tokens"] for s in speakers.values()) == result["overall"]["tokens"]
    nll = sum(s["loss"] * s["tokens"] for s in speakers.values())
    overall = result["overall"]["loss"] * result["overall"]["tokens"]
    assert abs(nll - overall) <= 1e-6 * overall, (nll, overall)


def test_generate_verb_by_topic_name_and_errors(trained, capsys):
    config = json.loads((trained / "model" / "config.json").read_text())
    topic = config["topic_names"][2]
    args = ["generate", "--model", str(trained / "model"), "--topic", topic, "--turn", "Budi: Halo, apa kabar?"]
    assert (
        main([*args, "--speaker", "Sari", "--num-turns", "2", "--max-new-tokens", "8", "--greedy", "--no-stream"]) == 0
    )
    printed = capsys.readouterr().out
    assert f"==== Topik: {topic} ====" in printed and "\nSari:" in printed and "\nBudi:" in printed
    # the shipped default conditions on the Topik/Konteks text: a new topic needs its Konteks, then it works
    assert config["conditioning"] == "text"
    assert main(["generate", "--model", str(trained / "model"), "--topic", "Topik yang tidak ada"]) == 2
    err = capsys.readouterr().err
    assert "--context" in err and config["topic_names"][1] in err and "Traceback" not in err
    new = ["--topic", "Topik yang tidak ada", "--context", "Dua teman ngobrol soal hujan.", "--turn", "Budi: Halo!"]
    assert main(["generate", "--model", str(trained / "model"), *new, "--max-new-tokens", "4", "--no-stream"]) == 0
    assert "==== Topik: Topik yang tidak ada ====" in capsys.readouterr().out
    assert main(["generate", "--model", str(trained / "model"), "--topic", "999"]) == 2
    assert "out of range" in capsys.readouterr().err


PROMPT = "==== Topik: Apa itu? ====\n\nKonteks: Dua teman ngobrol.\n\nKiann: Halo, apa kabar?\n\nCaecillia:"


def _newline_tokens(tok) -> set[int]:
    return {i for i in range(len(tok)) if "\n" in tok.decode([i]) and not tok.decode([i]).strip()}


def test_plain_generate_and_pipeline_stop_at_the_end_of_the_reply(trained):
    """No `stop_strings`, no tokenizer, no extra arguments: the saved generation config ends a reply at its first
    newline token. Before, `</s>` was the only end and replies ran on into blank lines and new turns."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    import ringan  # noqa: F401  (the installed classes)

    tok = AutoTokenizer.from_pretrained(trained / "model")
    model = AutoModelForCausalLM.from_pretrained(trained / "model").eval()
    newlines = _newline_tokens(tok)
    inputs = tok(PROMPT, return_tensors="pt")
    stopped = 0
    for seed in range(8):
        torch.manual_seed(seed)
        new = model.generate(**inputs)[0, inputs["input_ids"].shape[1] :].tolist()
        assert not newlines & set(new[:-1]), tok.decode(new)  # nothing after the first newline
        if len(new) < model.generation_config.max_new_tokens:
            assert new[-1] in newlines | {tok.eos_token_id}
            stopped += new[-1] in newlines
    assert stopped >= 1
    assert set(model.generation_config.eos_token_id) == newlines | {tok.eos_token_id}
    generator = pipeline("text-generation", model=model, tokenizer=tok)
    for seed in range(3):
        torch.manual_seed(seed)
        text = generator(PROMPT, return_full_text=False)[0]["generated_text"]
        assert "\n" not in text.rstrip("\n"), text


def test_generate_reply_tokens_end_at_the_turn(trained):
    from ringan.commands.generate import generate_reply
    from ringan.data import render_dialogue
    from ringan.loading import load_model

    model, tok = load_model(trained / "model")
    prompt = render_dialogue("T", "K", [], "A")
    seen = []
    real = model.generate

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out[0, kwargs["input_ids"].shape[1] :].tolist())
        return out

    model.generate = spy
    for seed in range(5):
        torch.manual_seed(seed)
        generate_reply(model, tok, prompt, 1, 0, 60, {"do_sample": True, "top_k": 0})
    newlines = _newline_tokens(tok)
    assert all(not newlines & set(new[:-1]) for new in seen), [tok.decode(n) for n in seen]


def test_chat_session_resume_gives_the_same_replies(trained, tmp_path):
    from ringan.commands.chat import chat as chat_job

    model = str(trained / "model")
    kwargs = dict(model=model, max_new_tokens=6, greedy=True)
    straight = chat_job(
        session=str(tmp_path / "a.safetensors"), input_stream=io.StringIO("halo\napa kabar?\n"), **kwargs
    )
    chat_job(session=str(tmp_path / "b.safetensors"), input_stream=io.StringIO("halo\n/quit\n"), **kwargs)
    resumed = chat_job(session=str(tmp_path / "b.safetensors"), input_stream=io.StringIO("apa kabar?\n"), **kwargs)
    assert [t.text for t in resumed.turns] == [t.text for t in straight.turns]
    assert resumed.token_ids == straight.token_ids
    assert resumed.seen == straight.seen
    # the state read exactly the tokens a one-shot prompt of the same conversation gives (no stray "\n\n" token)
    from ringan.data import render_dialogue

    first = render_dialogue(straight.topic, straight.context, straight.turns[:1], straight.bot)
    expected = straight.tok(first)["input_ids"]
    assert straight.token_ids[: len(expected)] == expected
    # the session file holds the fixed-size state, not the history's activations
    from safetensors import safe_open

    with safe_open(str(tmp_path / "b.safetensors"), "pt") as f:
        assert any(k.startswith("cache.layers.") for k in f.keys())


def test_push_uploads_the_folder_with_card(trained, monkeypatch, capsys):
    from huggingface_hub import HfApi

    calls = {}

    def fake_create_repo(self, repo_id, **kwargs):
        calls["repo"] = (repo_id, kwargs)
        return f"https://huggingface.co/{repo_id}"

    def fake_create_commit(self, repo_id, operations, **kwargs):
        calls["files"] = sorted(op.path_in_repo for op in operations)
        import yaml

        [card] = [op.path_or_fileobj for op in operations if op.path_in_repo == "README.md"]
        calls["card"] = card.decode() if isinstance(card, bytes) else Path(card).read_text()
        calls["metadata"] = yaml.safe_load(calls["card"].split("---")[1])  # the card's metadata parses
        return None

    monkeypatch.setattr(HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(HfApi, "create_commit", fake_create_commit)
    assert main(["push", "--model", str(trained / "model"), "--repo-id", "someone/ringan-tiny", "--private"]) == 0
    assert calls["repo"][0] == "someone/ringan-tiny" and calls["repo"][1]["private"] is True
    for name in [
        "config.json",
        "model.safetensors",
        "modeling_ringan.py",
        "configuration_ringan.py",
        "tokenizer.json",
        "README.md",
    ]:
        assert name in calls["files"], name
    assert calls["metadata"]["library_name"] == "transformers" and calls["metadata"]["language"] == ["id"]
    assert "AutoModelForCausalLM.from_pretrained" in calls["card"] and "trust_remote_code=True" in calls["card"]
    assert 'model_id = "someone/ringan-tiny"' in calls["card"]  # the snippet loads what was pushed
    assert "base_model" not in calls["metadata"]  # only a real Hub id may stand there
    assert main(["push", "--model", str(trained / "model"), "--repo-id", "no-slash"]) == 2


def test_push_dry_run_lists_files_and_card_and_uploads_nothing(trained, monkeypatch, capsys):
    from huggingface_hub import HfApi

    def no_network(*args, **kwargs):
        raise AssertionError("a dry run reached the Hub")

    monkeypatch.setattr(HfApi, "create_repo", no_network)
    monkeypatch.setattr(HfApi, "create_commit", no_network)
    assert main(["push", "--model", str(trained / "model"), "--repo-id", "someone/x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "modeling_ringan.py", "tokenizer.json", "README.md"):
        assert f"  {name} " in out, name
    assert 'model_id = "someone/x"' in out and "library_name: transformers" in out


def test_push_network_error_is_one_line(trained, tmp_path):
    result = run_cli(
        ["push", "--model", str(trained / "model"), "--repo-id", "someone/x", "--token", "hf_fake"],
        cwd=tmp_path,
        env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "HF_HUB_ETAG_TIMEOUT": "2"},
        timeout=120,
    )
    one_line_error(result.returncode, result.stderr, "push", "push to someone/x failed")


def test_config_file_with_command_line_override(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        "init_from: none\nhidden_size: 32\nintermediate_size: 64\nmax_length: 64\nvocab_size: 300\nmax_steps: 2\n"
        "batch_size: 2\nattention_type: linear\n"
    )
    out = tmp_path / "run"
    assert (
        main(["train", "--config", str(cfg), "--output", str(out), "--attention-type", "gated", "--eval-steps", "2"])
        == 0
    )
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["hidden_size"] == 32 and config["attention_type"] == "gated"
    # the run folder records every resolved option: replaying it elsewhere trains the same model
    recorded = json.loads((out / "options.json").read_text())
    assert recorded["attention_type"] == "gated" and recorded["eval_steps"] == 2 and recorded["learning_rate"] == 3e-3
    replay = tmp_path / "replay"
    assert main(["train", "--config", str(out / "options.json"), "--output", str(replay)]) == 0
    assert json.loads((replay / "options.json").read_text()) == {**recorded, "output": str(replay)}
    assert (
        load_file(str(replay / "model" / "model.safetensors")).keys()
        == load_file(str(out / "model" / "model.safetensors")).keys()
    )
    for name, weight in load_file(str(out / "model" / "model.safetensors")).items():
        assert torch.equal(weight, load_file(str(replay / "model" / "model.safetensors"))[name]), name
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("hidden_sise: 32\n")
    assert main(["train", "--config", str(bad_cfg)]) == 2


def test_id_table_overflow_warns_only_a_model_that_reads_ids(tmp_path, recwarn):
    """A text-conditioned model never reads the topic/context id tables: the 40 Topik that do not fit 3 rows are no
    news to its user; an ids model is told."""
    args = ["train", *TINY, "--max-steps", "1", "--num-topics", "3", "--validation-fraction", "0"]
    assert main([*args, "--output", str(tmp_path / "text")]) == 0
    assert not [w for w in recwarn if "distinct topics" in str(w.message)]
    assert main([*args, "--output", str(tmp_path / "ids"), "--conditioning", "ids"]) == 0
    assert [w for w in recwarn if "distinct topics" in str(w.message)]


def test_validation_data_holds_out_exactly_those_entries(tmp_path, capsys):
    entries = load_default_corpus()
    write_dialogues(tmp_path / "train.txt", entries[:30])
    write_dialogues(tmp_path / "val.txt", entries[30:33])
    out = tmp_path / "run"
    args = ["train", *TINY, "--data", str(tmp_path / "train.txt"), "--max-steps", "2", "--output", str(out)]
    assert main([*args, "--validation-data", str(tmp_path / "val.txt")]) == 0
    printed = capsys.readouterr().out
    assert "30 train / 3 validation entries" in printed and "on 3 held-out entries" in printed
    assert main([*args, "--validation-data", "val.txt", "--validation-fraction", "0.2", "--overwrite"]) == 2
    assert "--validation-data and --validation-fraction" in capsys.readouterr().err


def test_fine_tune_from_a_saved_model_keeps_topic_ids(trained, tmp_path):
    entries = load_default_corpus()[:3]
    data = tmp_path / "new.txt"
    write_dialogues(data, entries)
    out = tmp_path / "ft"
    assert (
        main(
            [
                "train",
                "--init-from",
                str(trained / "model"),
                "--data",
                str(data),
                "--output",
                str(out),
                "--max-steps",
                "2",
                "--batch-size",
                "2",
                "--max-length",
                "64",
                "--validation-fraction",
                "0",
            ]
        )
        == 0
    )
    before = json.loads((trained / "model" / "config.json").read_text())["topic_names"]
    after = json.loads((out / "model" / "config.json").read_text())["topic_names"]
    assert after[: len(before)] == before


def test_killed_run_resumes_to_the_same_loss_curve(tmp_path):
    """SIGKILL right after step 6 (checkpoints every 4 steps), resume with --resume auto: every logged loss
    equals the uninterrupted run's, and no checkpoint on disk is ever incomplete."""
    args = [*TINY, "--max-steps", "10", "--save-steps", "4", "--eval-steps", "5", "--save-total-limit", "3"]
    straight = run_cli(["train", "--output", str(tmp_path / "a"), *args])
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = run_train_killed_at_step(6, ["--output", str(tmp_path / "b"), *args])
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (tmp_path / "b").glob("checkpoint-*")) == ["checkpoint-4"]
    assert not (tmp_path / "b" / "model").exists()
    resumed = run_cli(["train", "--output", str(tmp_path / "b"), "--resume", "auto", *args])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resume: from" in resumed.stdout

    def curve(path):
        steps = [int(row["step"]) for row in read_metrics(path / "metrics.csv") if row.get("loss")]
        assert steps == sorted(set(steps)), steps  # the killed attempt's rows after the checkpoint are gone
        return {int(row["step"]): float(row["loss"]) for row in read_metrics(path / "metrics.csv") if row.get("loss")}

    a, b = curve(tmp_path / "a"), curve(tmp_path / "b")
    assert sorted(a) == sorted(b) == list(range(1, 11))
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-5 * abs(a[step]), (step, a[step], b[step])


def test_plain_trainer_lowers_the_loss_on_the_shipped_corpus():
    """The HF Trainer, unchanged, trains the model: 20 steps lower the loss."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from ringan import RinganConfig, RinganForCausalLM
    from ringan.data import LabelVocab
    from ringan.tokenization import train_tokenizer
    from ringan.training import DialogueCollator, entry_to_examples

    entries = load_default_corpus()
    tok = train_tokenizer(entries, vocab_size=500)
    topics = LabelVocab.build([e.topic for e in entries], 50)
    contexts = LabelVocab.build([e.context for e in entries], 50)
    examples = [x for e in entries for x in entry_to_examples(e, tok, topics, contexts, 128)]
    torch.manual_seed(0)
    model = RinganForCausalLM(
        RinganConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_topics=50, num_contexts=50)
    )
    args = TrainingArguments(
        output_dir="/tmp/ringan-plain-trainer", per_device_train_batch_size=8, learning_rate=3e-3, max_steps=20,
        logging_steps=1, report_to=[], remove_unused_columns=False, use_cpu=True, save_strategy="no",
    )  # fmt: skip
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        data_collator=DialogueCollator(tok.pad_token_id, model.config.conditioning),
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses


# ------------------------------------------------------------------------- defects found by using it


def test_init_from_a_quantized_model_trains_every_weight_in_fp32(trained, tmp_path, capsys):
    """Before: the quantized modules' int codes are buffers, so only the norms trained (160 of 23,264
    parameters) and the result was saved quantized again, without a word."""
    from safetensors.torch import load_file

    from ringan.conversion import quantize_folder

    quantize_folder(trained / "model", tmp_path / "q8", bits=8)
    out = tmp_path / "ft"
    args = ["train", "--init-from", str(tmp_path / "q8"), "--output", str(out), "--max-steps", "2", "--batch-size", "2"]
    assert main([*args, "--max-length", "64", "--validation-fraction", "0", "--learning-rate", "0.01"]) == 0
    after, before = load_file(out / "model" / "model.safetensors"), load_file(trained / "model" / "model.safetensors")
    assert set(after) == set(before)  # float weights again, every one of them
    linear = [k for k in before if k.endswith("proj.weight") or k in ("lm_head.weight", "model.embed_tokens.weight")]
    changed = [k for k in linear if (after[k] - before[k]).abs().max() > 0.02 * before[k].abs().max()]
    assert len(changed) == len(linear), sorted(set(linear) - set(changed))
    assert json.loads((out / "model" / "config.json").read_text())["quantization"] is None
    assert "dequantized from int8 to fp32 for training" in capsys.readouterr().err


def test_verbs_find_the_model_the_user_just_trained(trained, tmp_path, monkeypatch, capsys):
    """Before: every verb defaulted to runs/ringan/model, while the quickstart saves runs/quickstart/model."""
    import shutil

    shutil.copytree(trained / "model", tmp_path / "runs" / "quickstart" / "model")
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--max-new-tokens", "3", "--no-stream"]) == 0
    printed = capsys.readouterr()
    assert "==== Topik:" in printed.out and "using runs/quickstart/model" in printed.err


def test_checkpoints_print_no_shard_bars_into_the_training_log(tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as in a fresh process (another test may have turned them off)
    args = ["train", "--output", str(tmp_path / "run"), *TINY, "--max-steps", "2", "--save-steps", "1"]
    assert main([*args, "--eval-steps", "1"]) == 0
    printed = capsys.readouterr()
    assert "Writing model shards" not in printed.out + printed.err
    assert "Loading weights" not in printed.out + printed.err


def test_docs_name_exactly_the_verbs_that_have_threads():
    import re

    readme = " ".join((ROOT / "docs" / "performance.md").read_text().split())
    sentence = re.search(r"The verbs that run the model in PyTorch have `--threads`: ([^.]*)\.", readme)
    assert sentence, "docs/performance.md says which verbs have --threads"
    named = set(re.findall(r"`(\w+)`", sentence.group(1)))
    from ringan.options import option_fields

    assert named == {name for name, verb in VERBS.items() if "threads" in option_fields(verb.options)}
    assert "Every verb has `--threads`" not in readme


def test_examples_are_described_as_they_are():
    import ast

    def imports(name: str) -> set[str]:
        tree = ast.parse((ROOT / "examples" / name).read_text())
        found = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        return found | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}

    assert not any(m.startswith("ringan") for m in imports("generate_with_transformers.py"))
    assert {m for m in imports("finetune_with_trainer.py") if m.startswith("ringan")} == {
        "ringan.data",
        "ringan.training",
    }
    readme = " ".join((ROOT / "docs" / "layout.md").read_text().split())
    assert "examples with plain transformers code" not in readme
    assert "it reads the dialogue format with `ringan.data` and builds the inputs with `ringan.training`" in readme


def test_the_model_card_code_runs_as_written_and_stops_at_the_end_of_the_reply(trained, tmp_path):
    """The card's usage block, run in a fresh process without ringan (before, it passed stop_strings=["\\n\\n"]
    while the CLI stopped at "\\n")."""
    import re

    from fresh_process import run_without_ringan

    card = (trained / "model" / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.DOTALL).group(1)
    assert "stop_strings" not in code
    code = code.replace("PATH_OR_REPO", str(trained / "model")).replace("print(", "reply = (")
    code += "\nimport json\nnew = out[0, ids['input_ids'].shape[1]:].tolist()\n"
    code += "print(json.dumps({'new': new, 'eos': model.generation_config.eos_token_id, 'max': 60}))\n"
    result = run_without_ringan("import sys, torch\ntorch.manual_seed(0)\n" + code, tmp_path)
    eos = set(result["eos"])
    assert not eos & set(result["new"][:-1]) and (len(result["new"]) == result["max"] or result["new"][-1] in eos)


class _StopBeforeTraining(Exception):
    pass


def test_quickstart_trains_only_on_its_training_split(tmp_path, monkeypatch):
    """Before: the quickstart evaluated on a seed-0 split but let `ringan train` split again with its own seed, so
    held-out entries were trained on."""
    from ringan.commands import quickstart as quickstart_module
    from ringan.data import load_default_corpus, read_dialogues, render_entry

    seen = {}

    def record(**kwargs):
        seen.update(kwargs)
        raise _StopBeforeTraining

    monkeypatch.setattr(quickstart_module, "train", record)
    with pytest.raises(_StopBeforeTraining):
        quickstart_module.quickstart(output=str(tmp_path / "qs"), threads=1)
    assert seen["validation_fraction"] == 0.0
    assert seen["max_steps"] == quickstart_module.QUICKSTART_STEPS and seen["threads"] == 1  # same on every machine
    trained = [render_entry(e) for e in read_dialogues(seen["data"])]
    held_out = [render_entry(e) for e in read_dialogues(tmp_path / "qs" / quickstart_module.HELD_OUT)]
    corpus = [render_entry(e) for e in load_default_corpus()]
    assert len(held_out) == -(-len(corpus) // 10) and not set(trained) & set(held_out)  # 10%, rounded up
    assert sorted(trained + held_out) == sorted(corpus)
