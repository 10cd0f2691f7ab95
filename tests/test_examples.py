"""The examples run as a user would run them, on a model saved by `ringan train`: generation with plain transformers
(no `ringan` import), fine-tuning with a plain `Trainer` (the dialogue format read with `ringan.data`, inputs built with `ringan.training`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ringan.cli import main
from ringan.data import load_default_corpus, write_dialogues

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("examples")
    args = ["train", "--output", str(out), "--init-from", "none", "--hidden-size", "32", "--intermediate-size", "64"]
    args += ["--max-length", "96"]
    assert main([*args, "--vocab-size", "400", "--max-steps", "3", "--batch-size", "4", "--eval-steps", "3"]) == 0
    return out / "model"


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_generate_example_with_plain_transformers(model_dir):
    topic = json.loads((model_dir / "config.json").read_text())["topic_names"][1]
    result = run("generate_with_transformers.py", str(model_dir), "--turn", "Budi: Halo!", "--max-new-tokens", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        f"==== Topik: {topic} ====" in result.stdout
        and "Budi: Halo!" in result.stdout
        and "Caecillia:" in result.stdout
    )


def test_finetune_example_with_plain_trainer(model_dir, tmp_path):
    data = tmp_path / "mine.txt"
    write_dialogues(data, load_default_corpus()[:4])
    out = tmp_path / "ft"
    result = run("finetune_with_trainer.py", str(model_dir), str(data), "--output", str(out), "--max-steps", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fine-tuned 4 steps" in result.stdout
    assert (out / "model.safetensors").is_file() and (out / "modeling_ringan.py").is_file()
