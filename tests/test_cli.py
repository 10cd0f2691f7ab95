"""Every CLI verb on tiny configs: train, eval, generate, chat (with session resume), push (mocked Hub),
bad input, config files, kill-and-resume, and 2-process DDP on the CPU."""

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

from ringan.cli import main
from ringan.data import load_default_corpus, write_dialogues

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--hidden-size", "32", "--intermediate-size", "64", "--num-heads", "4", "--max-length", "96",
    "--vocab-size", "400", "--batch-size", "4", "--logging-steps", "1",
]  # fmt: skip


def run_cli(args: list[str], cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ringan", *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert (
        main(["train", "--output", str(out), *TINY, "--max-steps", "8", "--eval-steps", "4", "--save-steps", "4"]) == 0
    )
    return out


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
    # keep-best: the best validation loss seen is on disk, and the final model is at least that good
    best = json.loads((trained / "best" / "best.json").read_text())
    assert best["eval_loss"] == pytest.approx(min(float(r["eval_loss"]) for r in evals[:-1]))
    assert float(evals[-1]["eval_loss"]) <= best["eval_loss"] + 1e-6


def test_eval_verb_overall_and_per_speaker(trained, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(trained / "model"), "--json-output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "perplexity" in printed and "bits/byte" in printed
    result = json.loads(out.read_text())
    speakers = result["per_speaker"]
    assert "(Topik/Konteks)" in speakers and "Kiann" in speakers
    total = sum(s["tokens"] for s in speakers.values())
    n_entries = len(load_default_corpus())
    assert total == result["overall"]["tokens"] - 0 or abs(total - result["overall"]["tokens"]) <= n_entries
    # the overall loss is the token-weighted mean of the per-speaker losses
    weighted = sum(s["loss"] * s["tokens"] for s in speakers.values()) / total
    assert abs(weighted - result["overall"]["loss"]) < 0.05


def test_generate_verb_by_topic_name_and_errors(trained, capsys):
    config = json.loads((trained / "model" / "config.json").read_text())
    topic = config["topic_names"][2]
    args = ["generate", "--model", str(trained / "model"), "--topic", topic, "--turn", "Budi: Halo, apa kabar?"]
    assert (
        main([*args, "--speaker", "Sari", "--num-turns", "2", "--max-new-tokens", "8", "--greedy", "--no-stream"]) == 0
    )
    printed = capsys.readouterr().out
    assert f"==== Topik: {topic} ====" in printed and "\nSari:" in printed and "\nBudi:" in printed
    assert main(["generate", "--model", str(trained / "model"), "--topic", "Topik yang tidak ada"]) == 2
    err = capsys.readouterr().err
    assert "unknown topic" in err and config["topic_names"][1] in err and "Traceback" not in err
    assert main(["generate", "--model", str(trained / "model"), "--topic", "999"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_generate_stops_at_the_end_of_the_reply(trained):
    from ringan.app import generate_reply, load_model, prompt_text

    model, tok = load_model(trained / "model")
    reply = generate_reply(model, tok, prompt_text("T", "K", [], "A"), 1, 0, 40, {"do_sample": False})
    assert "\n" not in reply


def test_chat_session_resume_gives_the_same_replies(trained, tmp_path):
    from ringan.app import chat_job

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
    from ringan.app import prompt_text

    first = prompt_text(straight.topic, straight.context, straight.turns[:1], straight.bot)
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

        calls["card"] = next(
            Path(op.path_or_fileobj).read_text() for op in operations if op.path_in_repo == "README.md"
        )
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
    assert main(["push", "--model", str(trained / "model"), "--repo-id", "no-slash"]) == 2


def test_bad_inputs_give_one_line_errors(tmp_path, trained):
    bad = tmp_path / "bad.txt"
    bad.write_text("==== Topik: A ====\n\nKonteks: k\n\nBudi halo\n", encoding="utf-8")
    result = run_cli(["train", "--data", str(bad), "--output", str(tmp_path / "o")])
    assert result.returncode == 2
    assert f"{bad}:5:" in result.stderr and "Traceback" not in result.stderr
    result = run_cli(["train", "--data", str(tmp_path / "missing.txt")])
    assert result.returncode == 2 and "missing.txt" in result.stderr and "Traceback" not in result.stderr
    # a checkpoint folder missing files
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((trained / "model" / "config.json").read_text())
    result = run_cli(["eval", "--model", str(broken)])
    assert result.returncode == 2 and "missing model.safetensors, tokenizer.json" in result.stderr
    # a tokenizer that does not belong to the model
    import shutil

    mismatched = tmp_path / "mismatched"
    shutil.copytree(trained / "model", mismatched)
    assert main(["tokenizer", "--output", str(tmp_path / "bigtok"), "--vocab-size", "900"]) == 0
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(tmp_path / "bigtok" / name, mismatched / name)
    result = run_cli(["generate", "--model", str(mismatched)])
    assert result.returncode == 2 and "do not belong together" in result.stderr and "Traceback" not in result.stderr


def test_config_file_with_command_line_override(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        "hidden_size: 32\nintermediate_size: 64\nmax_length: 64\nvocab_size: 300\nmax_steps: 2\nbatch_size: 2\nattention_type: linear\n"
    )
    out = tmp_path / "run"
    assert (
        main(["train", "--config", str(cfg), "--output", str(out), "--attention-type", "gated", "--eval-steps", "2"])
        == 0
    )
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["hidden_size"] == 32 and config["attention_type"] == "gated"
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("hidden_sise: 32\n")
    assert main(["train", "--config", str(bad_cfg)]) == 2


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
        losses = {}
        for row in read_metrics(path / "metrics.csv"):
            if row.get("loss"):
                losses[int(row["step"])] = float(row["loss"])  # a resumed step overwrites its earlier log
        return losses

    a, b = curve(tmp_path / "a"), curve(tmp_path / "b")
    assert sorted(a) == sorted(b) == list(range(1, 11))
    for step in a:
        assert abs(a[step] - b[step]) <= 1e-5 * abs(a[step]), (step, a[step], b[step])


def test_two_process_ddp_training_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
        "-m", "ringan.cli", "train", "--output", str(out), *TINY, "--max-steps", "4", "--save-steps", "2",
        "--eval-steps", "2", "--batch-size", "2", "--threads", "1",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = out / "checkpoint-4"
    assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists()
    assert (out / "model" / "model.safetensors").exists()
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    # two processes x batch 2: each optimizer step sees 4 sequences
    assert state["train_batch_size"] == 2 and state["global_step"] == 4
    assert result.stdout.count("saved:") == 1  # only the main process saves and prints


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
        model=model, args=args, train_dataset=Dataset.from_list(examples), data_collator=DialogueCollator()
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
