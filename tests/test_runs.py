"""Training runs and their folders: never two runs mixed, one run at a time, a finished run stays finished, a
kill between two renames or a full disk loses nothing completed, and 2-process training equals 1 process."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import ROOT, TINY, error_line, one_line_error, snapshot
from safetensors.torch import load_file

from ringan.cli import main
from ringan.data import load_default_corpus, write_dialogues
from ringan.files import COMPLETE_MARKER, LOCK_FILE

SHORT = [*TINY, "--max-steps", "4", "--eval-steps", "2", "--save-steps", "2"]


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_folder_holding_another_run_is_refused_and_overwrite_leaves_only_the_new_run(tmp_path, capsys):
    """Before: the second run trained into the first run's folder, keep-best shipped the first run's (better)
    weights under the second run's config, and metrics.csv held both runs' rows."""
    out = tmp_path / "run"
    first_data, second_data = tmp_path / "first.txt", tmp_path / "second.txt"
    corpus = load_default_corpus()
    write_dialogues(first_data, corpus[:20])
    write_dialogues(second_data, corpus[20:])
    args = [
        "train",
        "--output",
        str(out),
        *TINY,
        "--eval-steps",
        "2",
        "--save-steps",
        "2",
        "--validation-fraction",
        "0.2",
    ]
    assert main([*args, "--data", str(first_data), "--max-steps", "6"]) == 0
    first_best = json.loads((out / "best" / "best.json").read_text())
    capsys.readouterr()

    before = snapshot(out)
    assert main([*args, "--data", str(second_data), "--max-steps", "2"]) == 2
    one_line_error(2, capsys.readouterr().err, "train", "holds another training run", "--overwrite", "--resume auto")
    assert snapshot(out) == before  # refused before touching anything

    assert main([*args, "--data", str(second_data), "--max-steps", "2", "--overwrite"]) == 0
    assert "overwrite: removing the earlier run" in capsys.readouterr().out
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["run_id"] == run_id != first_best["run_id"] and best["step"] <= 2
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert {int(r["step"]) for r in rows(out / "metrics.csv")} <= {1, 2}  # only this run's rows
    topics = json.loads((out / "model" / "config.json").read_text())["topic_names"][1:]
    assert set(topics) <= {e.topic for e in corpus[20:]}  # the config and the weights are this run's
    final = load_file(out / "model" / "model.safetensors")
    kept = load_file(out / "best" / "model.safetensors")
    assert all(torch.equal(final[k], kept[k]) for k in kept) or best["step"] == 2


def test_keep_best_ignores_weights_another_run_left_in_best(tmp_path, trained_run, capsys):
    """A `best/` whose record is not this run's (here: other weights with a forged, much lower loss) is never
    taken as the model."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    forged = json.loads((run / "best" / "best.json").read_text())
    (run / "best" / "best.json").write_text(json.dumps({**forged, "run_id": "someone-else", "eval_loss": 0.001}))
    shutil.copy(run / "checkpoint-4" / "model.safetensors", run / "best" / "model.safetensors")
    shutil.rmtree(run / "model")  # the run must save its model again
    args = ["train", "--output", str(run), *TINY, "--max-steps", "8", "--eval-steps", "4", "--save-steps", "4"]
    assert main([*args, "--resume", "auto"]) == 0
    assert "keep-best" not in capsys.readouterr().out
    final = load_file(run / "model" / "model.safetensors")
    last = load_file(run / "checkpoint-8" / "model.safetensors")
    other = load_file(run / "checkpoint-4" / "model.safetensors")
    assert all(torch.equal(final[k], last[k]) for k in final)
    assert not all(torch.equal(final[k], other[k]) for k in final)


HOLD_AT_STEP = """
import sys, time
from pathlib import Path
from transformers import TrainerCallback
from ringan.cli import parse_command_line
from ringan.commands.train import train

class Hold(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            Path(sys.argv[1]).write_text("holding")
            while not Path(sys.argv[2]).exists():
                time.sleep(0.05)

_, options = parse_command_line(["train", *sys.argv[3:]])
train(options, callbacks=[Hold()])
"""


def test_a_second_run_on_a_folder_in_use_fails_at_once_and_touches_nothing(tmp_path, capsys):
    out, ready, go = tmp_path / "run", tmp_path / "ready", tmp_path / "go"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD_AT_STEP, str(ready), str(go), "--output", str(out), *SHORT],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while not ready.exists():
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.1)
        before = snapshot(out)
        for extra in ([], ["--overwrite"], ["--resume", "auto"]):
            started = time.time()
            code = main(["train", "--output", str(out), *SHORT, *extra])
            line = one_line_error(code, capsys.readouterr().err, "train", str(out), "another ringan run is using")
            assert f"pid {first.pid}" in line and time.time() - started < 30
        assert snapshot(out) == before
    finally:
        go.write_text("go")
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    assert (out / "model" / "model.safetensors").is_file()


def test_a_kill_between_the_two_renames_leaves_a_model_that_eval_and_the_next_run_find(tmp_path, trained_run, capsys):
    """The state a kill leaves between `model -> model.old` and `model.tmp -> model` (and the same for `best`),
    plus a half-written checkpoint in `.staging` and a stray `metrics.csv.tmp`."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    for name in ("model", "best"):
        os.replace(run / name, run / f"{name}.old")
        shutil.copytree(run / f"{name}.old", run / f"{name}.tmp")
        (run / f"{name}.tmp" / COMPLETE_MARKER).write_text("")
    (run / ".staging" / "checkpoint-12").mkdir(parents=True)
    (run / ".staging" / "checkpoint-12" / "model.safetensors").write_bytes(b"half")
    (run / "metrics.csv.tmp").write_text("step\n")

    assert main(["eval", "--model", str(run / "model"), "--data", str(ROOT / "ringan" / "corpus" / "sains.txt")]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["generate", "--model", str(run / "model"), "--max-new-tokens", "2", "--no-stream"]) == 0
    assert "==== Topik:" in capsys.readouterr().out  # its topic_contexts.json found too
    assert not (run / "model").exists()  # eval and generate only read

    args = ["train", "--output", str(run), *TINY, "--max-steps", "8", "--eval-steps", "4", "--save-steps", "4"]
    assert main([*args, "--resume", "auto"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("recovered") == 2 and "is finished" in printed
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in trained_run.iterdir())
    assert snapshot(run / "model") == snapshot(trained_run / "model")
    assert json.loads((run / "best" / "best.json").read_text()) == json.loads(
        (trained_run / "best" / "best.json").read_text()
    )


def test_resume_from_an_earlier_checkpoint_of_the_run_is_refused_when_later_ones_exist(tmp_path, trained_run, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = {k: v for k, v in snapshot(run).items() if k != LOCK_FILE}
    assert main(["train", "--output", str(run), *TINY, "--resume", str(run / "checkpoint-4")]) == 2
    one_line_error(2, capsys.readouterr().err, "train", "has later checkpoints (checkpoint-8)", "--resume auto")
    assert {k: v for k, v in snapshot(run).items() if k != LOCK_FILE} == before


# ------------------------------------------------------------------------------------------ a full disk

FILL_LEVELS = """
import io, json, resource, sys
from ringan.cli import main

results = []
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
for level in map(int, sys.argv[2].split(",")):
    err = io.StringIO()
    sys.stderr = err
    resource.setrlimit(resource.RLIMIT_FSIZE, (level, hard))  # no file may grow past `level` bytes (EFBIG)
    try:
        code = main(["train", "--output", f"{sys.argv[1]}/{level}", *sys.argv[3:]])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        sys.stderr = sys.__stderr__
    results.append({"level": level, "code": code, "err": err.getvalue()})
print(json.dumps(results))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_full_disk_at_any_point_is_one_line_and_leaves_no_partial_files(tmp_path):
    """Files may not grow past 4 KB (the tokenizer cannot be saved), 25 KB (the first best weights or checkpoint
    cannot), 250 KB (a checkpoint's optimizer state cannot): one error line naming what could not be written, and
    no half-written folder left behind. (Python ignores SIGXFSZ, so a write past the limit fails with EFBIG.)"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    levels = [4_000, 25_000, 250_000]
    result = subprocess.run(
        [sys.executable, "-c", FILL_LEVELS, str(tmp_path), ",".join(map(str, levels)), *SHORT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    # (torch.save's own error drops the errno: "the write failed")
    expected = {
        4_000: ("tokenizer: cannot write the tokenizer", "File too large"),
        25_000: ("best: cannot write the best weights", "File too large"),
        250_000: ("checkpoint-2: cannot write the checkpoint", "the write failed"),
    }
    for level in found:
        error_line(level["code"], level["err"], "train", *expected[level["level"]], "is the disk full?")
        out = tmp_path / str(level["level"])
        leftovers = [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".old")) or p.name == ".staging"]
        assert not leftovers, leftovers
        for checkpoint in out.glob("checkpoint-*"):  # whatever was completed is whole
            load_file(checkpoint / "model.safetensors")


def test_disk_full_after_a_checkpoint_keeps_it_whole_and_resumable(tmp_path, monkeypatch, capsys):
    """ENOSPC in the second checkpoint's optimizer state, then in the final model: each is one line, the first
    checkpoint stays whole, and the run resumes from it to the end."""
    import errno

    out = tmp_path / "run"
    args = ["train", "--output", str(out), *TINY, "--max-steps", "4", "--eval-steps", "4", "--save-steps", "2"]
    real_save = torch.save
    calls = {"optimizer": 0}

    def full_disk_save(obj, f, *a, **kw):
        if str(f).endswith("optimizer.pt"):
            calls["optimizer"] += 1
            if calls["optimizer"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full_disk_save)
    assert main(args) == 2
    error_line(2, capsys.readouterr().err, "train", "checkpoint-4", "No space left on device", "intact")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"] and not (out / ".staging").exists()
    monkeypatch.setattr(torch, "save", real_save)

    from ringan.modeling import RinganForCausalLM

    real_save_pretrained = RinganForCausalLM.save_pretrained

    def full_disk_at_the_end(self, folder, *a, **kw):
        if Path(folder).name == "model.tmp":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save_pretrained(self, folder, *a, **kw)

    monkeypatch.setattr(RinganForCausalLM, "save_pretrained", full_disk_at_the_end)
    assert main([*args, "--resume", "auto"]) == 2
    error_line(2, capsys.readouterr().err, "train", "model: cannot write the final model", "checkpoints are intact")
    assert not (out / "model").exists() and not (out / "model.tmp").exists()
    monkeypatch.setattr(RinganForCausalLM, "save_pretrained", real_save_pretrained)

    assert main([*args, "--resume", "auto"]) == 0  # the last checkpoint is whole: only the model is left to save
    assert (out / "model" / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------ two processes

COUNT_TOKENIZERS = """
import os, sys
from pathlib import Path
import ringan.tokenization as tokenization

real = tokenization.train_tokenizer

def counted(*args, **kwargs):
    with open(sys.argv[1], "a") as f:
        f.write(os.environ.get("RANK", "0") + "\\n")
    return real(*args, **kwargs)

tokenization.train_tokenizer = counted
from ringan.cli import main
sys.exit(main(sys.argv[2:]))
"""
DDP = [
    "--init-from", "none", "--hidden-size", "32", "--intermediate-size", "64", "--num-heads", "4", "--max-length", "256",
    "--vocab-size", "400", "--logging-steps", "1", "--dropout", "0", "--conditioning-dropout", "0",
    "--no-keep-best", "--seed", "3", "--epochs", "0.3", "--warmup-ratio", "0.5", "--eval-steps", "100",
    "--save-steps", "100", "--threads", "1",
]  # fmt: skip


def _lr_peak_step(run: Path) -> int:
    logged = [(int(r["step"]), float(r["learning_rate"])) for r in rows(run / "metrics.csv") if r.get("learning_rate")]
    peak = max(lr for _, lr in logged)
    return min(step for step, lr in logged if lr == peak)


def test_two_processes_reach_the_weights_of_one_process_with_the_same_global_batch(tmp_path, capsys):
    """torchrun, 2 processes x batch 2 = 1 process x batch 4: the same weights (<= 1e-5), the printed step count is
    what the Trainer runs (before: twice as many were printed, so warm-up took twice its share), and the main
    process alone trains the tokenizer."""
    two, one, counter, script = tmp_path / "two", tmp_path / "one", tmp_path / "tokenizers", tmp_path / "count.py"
    script.write_text(COUNT_TOKENIZERS)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    cmd += [str(script), str(counter), "train", "--output", str(two), "--batch-size", "2", *DDP]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert counter.read_text().split() == ["0"]  # one tokenizer, trained by rank 0
    assert main(["train", "--output", str(one), "--batch-size", "4", "--tokenizer", str(two / "tokenizer"), *DDP]) == 0
    single = capsys.readouterr().out

    state = json.loads((two / "checkpoint-20" / "trainer_state.json").read_text())
    assert state["max_steps"] == state["global_step"] == 20 and state["train_batch_size"] == 2
    assert "20 steps (10 warm-up) on 2 processes x batch 2" in result.stdout
    assert "20 steps (10 warm-up) on 1 process x batch 4" in single
    assert _lr_peak_step(two) == _lr_peak_step(one) == 11  # the learning rate of step 11 is the first at its peak
    a, b = load_file(one / "model" / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    worst = max(((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-12)).item() for k in a)
    assert worst <= 1e-5, worst
    assert (two / "checkpoint-20" / "rng_state_0.pth").exists() and (two / "checkpoint-20" / "rng_state_1.pth").exists()
    assert result.stdout.count("saved:") == 1  # only the main process saves and prints


def test_the_documented_accelerate_command_runs_two_processes_on_a_cpu(tmp_path):
    """`accelerate launch --cpu --num_processes 2` starts ONE process (accelerate's --cpu launcher is not the
    torch.distributed one); the README's command for 2 CPU processes is `--multi_gpu --num_processes 2` on a
    machine without a GPU (or with CUDA_VISIBLE_DEVICES="")."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", "--main_process_port", "29519", "--num_processes", "2"]
    train = ["-m", "ringan.cli", "train", "--output", str(tmp_path / "acc"), "--batch-size", "2", *DDP]
    result = subprocess.run(
        [*launch, "--multi_gpu", *train], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 processes x batch 2" in result.stdout
    assert (tmp_path / "acc" / "checkpoint-20" / "rng_state_1.pth").exists()
    docs = " ".join((ROOT / "docs" / "cli.md").read_text().split())
    assert "accelerate launch --multi_gpu --num_processes 2 -m ringan.cli train" in docs


def test_printed_step_count_is_what_the_trainer_runs_with_accumulation(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--output", str(out), *TINY, "--epochs", "0.05", "--grad-accum", "3", "--save-steps", "1000"]
    assert main([*args, "--eval-steps", "1000", "--no-keep-best"]) == 0
    printed = capsys.readouterr().out
    (checkpoint,) = out.glob("checkpoint-*")
    steps = json.loads((checkpoint / "trainer_state.json").read_text())["max_steps"]
    assert f" {steps} steps (" in printed, (steps, printed)


def test_a_distributed_refusal_is_printed_once(tmp_path, trained_run):
    """The main process refuses (the folder holds another run) before any work; the other process stops too,
    silently."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29521"]
    cmd += [
        "-m",
        "ringan.cli",
        "train",
        "--output",
        str(run),
        "--init-from",
        "none",
        "--max-steps",
        "2",
        "--threads",
        "1",
    ]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert result.stderr.count("ringan train: error: ") == 1, result.stderr[-3000:]
    assert "holds another training run" in result.stderr
    assert "ringan/" not in "".join(line for line in result.stderr.splitlines() if line.lstrip().startswith("File "))
