"""The bad-input table: every bad file, folder, session, pickle and output path a user can hand the CLI, each
refused with exit status 2 and one stderr line that names the file (or the option) and what is wrong, no
traceback, and nothing written or changed anywhere (the whole test folder is compared before and after).

Cases that end in correct behaviour instead of an error (normalised invisible characters, a finished run, a
folder's own modeling code ignored, ...) are in `CORRECT`. Disk-full, concurrent runs, kills between renames and
2-process training are in `test_runs.py`; bad option values are `test_options.py`'s table.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from cli_helpers import one_line_error, snapshot
from safetensors.torch import load_file, save_file

from ringan.cli import main
from ringan.files import LOCK_FILE, FolderLock

MARKER = "MARKER-code-from-the-folder-ran"


class Evil:
    """A pickle that runs a shell command when loaded (what `weights_only=True` must refuse)."""

    def __init__(self, folder: Path):
        self.command = f"touch {folder / MARKER}"

    def __reduce__(self):
        return os.system, (self.command,)


@dataclass
class Case:
    argv: list[str]
    fragments: tuple[str, ...]


@dataclass
class Setup:
    """What a case builds on: a private copy of a trained model (`model`), the trained run (read only) and room."""

    tmp: Path
    run: Path
    monkeypatch: pytest.MonkeyPatch
    model: Path = field(init=False)

    def __post_init__(self):
        self.model = self.tmp / "model"
        shutil.copytree(self.run / "model", self.model)

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def config(self, **changes) -> Path:
        """Change (value) or drop (None) fields of the model copy's config.json."""
        path = self.model / "config.json"
        config = json.loads(path.read_text())
        for key, value in changes.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        path.write_text(json.dumps(config))
        return path

    def checkpoint(self) -> Path:
        folder = self.tmp / "ckpt"
        shutil.copytree(self.run / "checkpoint-8", folder)
        return folder

    def run_copy(self) -> Path:
        folder = self.tmp / "run"
        shutil.copytree(self.run, folder)
        return folder

    def session(self) -> Path:
        from ringan.commands.chat import chat as chat_job

        path = self.tmp / "made.safetensors"
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):  # setup, not the case
            chat_job(model=str(self.model), session=str(path), input_stream=io.StringIO("halo\n"), max_new_tokens=3)
        return path

    def data(self, text: str, name: str = "data.txt") -> Path:
        return self.write(name, text)


CLEAN = "==== Topik: A ====\n\nKonteks: K.\n\nSari: halo\n\nBima: hai\n"


def ev(s: Setup, *extra: str) -> list[str]:
    return ["eval", "--model", str(s.model), "--data", str(s.data(CLEAN, "clean.txt")), *extra]


def tensors_with(s: Setup, drop: str | None = None, add: str | None = None) -> None:
    tensors = load_file(s.model / "model.safetensors")
    if drop:
        tensors.pop(drop)
    if add:
        tensors[add] = torch.zeros(3)
    save_file(tensors, s.model / "model.safetensors", metadata={"format": "pt"})


def evil_module(folder: Path, name: str) -> None:
    (folder / f"{name}.py").write_text(f"open({str(folder / MARKER)!r}, 'w').write('ran')\nclass X: pass\n")


def foreign_model(s: Setup) -> None:
    evil_module(s.model, "evil")
    s.config(model_type="evilmodel", auto_map={"AutoConfig": "evil.X", "AutoModelForCausalLM": "evil.X"})


def session_with(s: Setup, meta: dict | None | str = "keep", tensors: dict | None = None) -> Path:
    from safetensors import safe_open

    path = s.session()
    with safe_open(str(path), "pt") as f:
        found = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    found.update(tensors or {})
    if meta != "keep":
        metadata = None if meta is None else {"ringan_chat": meta if isinstance(meta, str) else json.dumps(meta)}
    save_file(found, str(path), metadata=metadata)
    return path


def session_meta(s: Setup, drop: str) -> Path:
    from safetensors import safe_open

    path = s.session()
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["ringan_chat"])
    meta.pop(drop)
    return session_with(s, meta)


def quantized(s: Setup) -> Path:
    from ringan.conversion import quantize_folder

    quantize_folder(s.model, s.tmp / "q8", bits=8)
    return s.tmp / "q8"


def train(*extra: str) -> list[str]:
    return [
        "train",
        "--init-from",
        "none",
        "--hidden-size",
        "32",
        "--intermediate-size",
        "64",
        "--max-length",
        "64",
        *extra,
    ]


def _checkpoint_with(s: Setup, name: str, content) -> Path:
    folder = s.checkpoint()
    if isinstance(content, bytes):
        (folder / name).write_bytes(content)
    else:
        torch.save(content, folder / name)
    return folder


def _latest_with_evil(s: Setup) -> Path:
    run = s.run_copy()
    torch.save({"state": Evil(s.tmp)}, run / "checkpoint-8" / "optimizer.pt")
    return run


def _link_readme(s: Setup) -> Path:
    outside = s.write("secret.txt", "not for the Hub")
    (s.model / "README.md").unlink()
    (s.model / "README.md").symlink_to(outside)
    return s.model


def _no_hub(s: Setup) -> None:
    from huggingface_hub import HfApi

    def refuse(*args, **kwargs):
        raise AssertionError("the Hub was called for a push that should have been refused")

    s.monkeypatch.setattr(HfApi, "create_repo", refuse)
    s.monkeypatch.setattr(HfApi, "create_commit", refuse)


def _missing_module(s: Setup, name: str) -> None:
    s.monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError


def _lock(s: Setup, folder: Path) -> Path:
    lock = FolderLock(folder).acquire()
    s.monkeypatch.setattr(s, "held_lock", lock, raising=False)
    return folder


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
# (name) -> function(setup) -> Case
CASES: dict[str, Callable[[Setup], Case]] = {
    # ---- model folders
    "model folder missing": lambda s: Case(ev(s)[:2] + [str(s.tmp / "nope")], ("nope", "no such model folder")),
    "model path is a file": lambda s: Case(["eval", "--model", str(s.data(CLEAN))], ("data.txt", "is not a folder")),
    "model without weights": lambda s: (
        (s.model / "model.safetensors").unlink(),
        Case(ev(s), ("model", "missing model.safetensors")),
    )[1],
    "model without tokenizer": lambda s: (
        (s.model / "tokenizer.json").unlink(),
        Case(ev(s), ("missing tokenizer.json",)),
    )[1],
    "config.json not JSON": lambda s: (
        s.write("model/config.json", "{oops"),
        Case(ev(s), ("config.json", "not a valid config.json", "line 1")),
    )[1],
    "config.json a list": lambda s: (
        s.write("model/config.json", "[1, 2]"),
        Case(ev(s), ("config.json", "expected a JSON object")),
    )[1],
    "config.json no model_type": lambda s: (s.config(model_type=None), Case(ev(s), ("config.json", "no model_type")))[
        1
    ],
    "config.json another model": lambda s: (
        s.config(model_type="llama"),
        Case(ev(s), ("config.json", "not a Ringan model", "'llama'")),
    )[1],
    "config.json size mistyped": lambda s: (
        s.config(hidden_size="big"),
        Case(ev(s), ("config.json", "hidden_size must be an integer", "'big'")),
    )[1],
    "config.json negative heads": lambda s: (
        s.config(num_attention_heads=-1),
        Case(ev(s), ("config.json", "num_attention_heads must be an integer >= 1")),
    )[1],
    "config.json heads do not divide": lambda s: (
        s.config(num_attention_heads=3),
        Case(ev(s), ("config.json", "multiple of num_attention_heads")),
    )[1],
    "config.json unknown attention": lambda s: (
        s.config(attention_type="quantum"),
        Case(ev(s), ("config.json", "attention_type must be one of")),
    )[1],
    "config.json unknown activation": lambda s: (
        s.config(hidden_act="swishy"),
        Case(ev(s), ("config.json", "hidden_act must be one of")),
    )[1],
    "config.json size missing": lambda s: (
        s.config(hidden_size=None),
        Case(ev(s), ("model.safetensors", "does not match config.json", "another shape")),
    )[1],
    "config.json vocab disagrees with weights": lambda s: (
        s.config(vocab_size=999),
        Case(ev(s), ("model.safetensors", "does not match config.json", "[400, 32], config.json says [999, 32]")),
    )[1],
    "config.json topic_names not a list": lambda s: (
        s.config(topic_names=5),
        Case(ev(s), ("config.json", "topic_names must be a list of strings")),
    )[1],
    "config.json more topics than rows": lambda s: (
        s.config(num_topics=3),
        Case(ev(s), ("config.json", "topic_names has 41 names for 3 embedding rows")),
    )[1],
    "config.json bad eos id": lambda s: (
        s.config(eos_token_id="end"),
        Case(ev(s), ("config.json", "eos_token_id must be a token id")),
    )[1],
    "config.json unknown quantization": lambda s: (
        s.config(quantization={"bits": 3}),
        Case(ev(s), ("config.json", "bits must be one of")),
    )[1],
    "config.json foreign auto_map": lambda s: (
        foreign_model(s),
        Case(ev(s), ("config.json", "not a Ringan model", "auto_map", "never runs")),
    )[1],
    "weights empty": lambda s: (
        s.write("model/model.safetensors", b""),
        Case(ev(s), ("model.safetensors", "not a complete safetensors file")),
    )[1],
    "weights garbage": lambda s: (
        s.write("model/model.safetensors", b"not a tensor file at all " * 40),
        Case(ev(s), ("model.safetensors", "not a complete safetensors file")),
    )[1],
    "weights truncated": lambda s: (
        s.write("model/model.safetensors", (s.model / "model.safetensors").read_bytes()[:20000]),
        Case(ev(s), ("model.safetensors", "not a complete safetensors file", "cut short")),
    )[1],
    "weights missing a tensor": lambda s: (
        tensors_with(s, drop="lm_head.weight"),
        Case(ev(s), ("model.safetensors", "1 tensors missing (e.g. lm_head.weight)")),
    )[1],
    "weights with a stranger": lambda s: (
        tensors_with(s, add="model.extra.weight"),
        Case(ev(s), ("model.safetensors", "config.json does not describe (e.g. model.extra.weight)")),
    )[1],
    "tokenizer.json garbage": lambda s: (
        s.write("model/tokenizer.json", "garbage"),
        Case(ev(s), ("tokenizer.json", "not a valid tokenizer.json")),
    )[1],
    "tokenizer.json empty": lambda s: (
        s.write("model/tokenizer.json", ""),
        Case(ev(s), ("tokenizer.json", "not a valid tokenizer.json")),
    )[1],
    "tokenizer.json not a tokenizer": lambda s: (
        s.write("model/tokenizer.json", "{}"),
        Case(ev(s), ("tokenizer.json", "not a tokenizer file")),
    )[1],
    "tokenizer.json broken model": lambda s: (
        s.write("model/tokenizer.json", json.dumps({"model": {"type": "BPE", "vocab": "x"}, "added_tokens": []})),
        Case(ev(s), ("tokenizer.json", "not a usable tokenizer")),
    )[1],
    "tokenizer larger than the vocabulary": lambda s: (
        s.config(vocab_size=50),
        Case(ev(s), ("tokenizer has", "vocab_size is 50", "do not belong together")),
    )[1],
    "tokenizer_config.json garbage": lambda s: (
        s.write("model/tokenizer_config.json", "{,"),
        Case(ev(s), ("tokenizer_config.json", "not a valid tokenizer_config.json")),
    )[1],
    "tokenizer_config.json asks for code": lambda s: (
        evil_module(s.model, "tok_code"),
        s.write(
            "model/tokenizer_config.json",
            json.dumps({"auto_map": {"AutoTokenizer": [None, "tok_code.X"]}, "tokenizer_class": "X"}),
        ),
        Case(ev(s), ("tokenizer_config.json", "asks for tokenizer code", "never runs code")),
    )[2],
    "tokenizer without an eos token": lambda s: (
        s.write(
            "model/tokenizer_config.json",
            json.dumps({**json.loads((s.model / "tokenizer_config.json").read_text()), "eos_token": None}),
        ),
        Case(ev(s), ("the tokenizer has no eos token",)),
    )[1],
    "generation_config.json garbage": lambda s: (
        s.write("model/generation_config.json", "{"),
        Case(ev(s), ("generation_config.json", "not a valid generation_config.json")),
    )[1],
    "topic_contexts.json garbage": lambda s: (
        s.write("model/topic_contexts.json", "nope"),
        Case(["generate", "--model", str(s.model)], ("topic_contexts.json", "not a valid")),
    )[1],
    "topic_contexts.json a list": lambda s: (
        s.write("model/topic_contexts.json", "[1]"),
        Case(["generate", "--model", str(s.model)], ("topic_contexts.json", "expected a JSON object")),
    )[1],
    "no model under runs/": lambda s: (
        s.monkeypatch.chdir(s.tmp),
        Case(["generate"], ("no trained model under", "runs", "--model")),
    )[1],
    # ---- generate / chat
    "generate new topic without a Konteks": lambda s: Case(  # a text-conditioned model takes any Topik text
        ["generate", "--model", str(s.model), "--topic", "Tidak Ada"],
        ("no Konteks is known for topic 'Tidak Ada'", "pass --context", "topics with a Konteks: "),
    ),
    "generate topic id out of range": lambda s: Case(
        ["generate", "--model", str(s.model), "--topic", "999"], ("topic id 999 is out of range",)
    ),
    "generate turn without a name": lambda s: Case(
        ["generate", "--model", str(s.model), "--turn", "halo saja"], ("--turn", "expected 'Name: text'")
    ),
    "chat session garbage": lambda s: Case(
        ["chat", "--model", str(s.model), "--session", str(s.write("s.safetensors", "garbage"))],
        ("s.safetensors", "not a ringan chat session file"),
    ),
    "chat session without metadata": lambda s: Case(
        ["chat", "--model", str(s.model), "--session", str(session_with(s, None))],
        ("made.safetensors", "no ringan_chat metadata"),
    ),
    "chat session metadata not JSON": lambda s: Case(
        ["chat", "--model", str(s.model), "--session", str(session_with(s, "{nope"))],
        ("made.safetensors", "metadata is not valid JSON"),
    ),
    "chat session missing a field": lambda s: Case(
        ["chat", "--model", str(s.model), "--session", str(session_meta(s, "turns"))],
        ("made.safetensors", "bad or missing field", "turns"),
    ),
    "chat session from another vocabulary": lambda s: Case(
        [
            "chat",
            "--model",
            str(s.model),
            "--session",
            str(session_with(s, tensors={"token_ids": torch.tensor([1, 99999])})),
        ],
        ("made.safetensors", "do not fit this model's vocabulary"),
    ),
    "chat session state of another shape": lambda s: Case(
        [
            "chat",
            "--model",
            str(s.model),
            "--session",
            str(session_with(s, tensors={"cache.layers.0.state": torch.zeros(1, 2, 3, 3)})),
        ],  # fmt: skip
        ("made.safetensors", "saved state does not fit this model"),
    ),
    "chat session is a folder": lambda s: Case(
        ["chat", "--model", str(s.model), "--session", str(s.tmp)], (str(s.tmp), "is a folder")
    ),
    # ---- dialogue and text files
    "data missing": lambda s: Case(ev(s)[:4] + [str(s.tmp / "none.txt")], ("none.txt", "no such dialogue file")),
    "data folder without .txt": lambda s: (
        s.write("notes/readme.md", "x"),
        Case(ev(s)[:4] + [str(s.tmp / "notes")], ("notes", "folder has no .txt dialogue files")),
    )[1],
    "data not UTF-8": lambda s: Case(
        ev(s)[:4] + [str(s.data(CLEAN.encode().replace(b"halo", b"h\xe9lo")))], ("data.txt:5:", "not valid UTF-8")
    ),
    "data a binary file": lambda s: Case(
        ev(s)[:4] + [str(s.data(PNG, "image.txt"))], ("image.txt:", "not valid UTF-8")
    ),
    "data turn without a name": lambda s: Case(
        ev(s)[:4] + [str(s.data(CLEAN + "\nbudi halo tanpa titik dua\n"))], ("data.txt:9:", "expected a turn")
    ),
    "data wrapped Konteks": lambda s: Case(
        ev(s)[:4] + [str(s.data(CLEAN.replace("K.\n", "K.\nTentang B: suka kopi.\n")))],
        ("data.txt:4:", "no blank line between", "one line"),
    ),
    "data empty": lambda s: Case(ev(s)[:4] + [str(s.data("\n \n"))], ("data.txt:1:", "no entries")),
    "data very long bad line": lambda s: Case(
        ev(s)[:4] + [str(s.data(CLEAN + "\n" + "kata " * 3000 + "\n"))], ("data.txt:9:", "expected a turn", "…")
    ),
    "text file missing": lambda s: Case(
        train("--text", str(s.tmp / "prose.txt"), "--output", str(s.tmp / "o")), ("prose.txt", "no such text file")
    ),
    "text file not UTF-8": lambda s: Case(
        train("--text", str(s.data(b"satu\ndua \xff\n", "prose.txt")), "--output", str(s.tmp / "o")),
        ("prose.txt:2:", "not valid UTF-8"),
    ),
    "no training entries left": lambda s: Case(
        train(
            "--data",
            str(s.data(CLEAN + "\n" + CLEAN.replace("A", "B"))),
            "--validation-fraction",
            "0.9",
            "--output",
            str(s.tmp / "o"),
        ),
        ("no training data", "--validation-fraction"),
    ),
    # ---- training runs: output folders, resume, inputs
    "train into another run": lambda s: Case(
        train("--output", str(s.run_copy())), ("run", "holds another training run", "--resume auto", "--overwrite")
    ),
    "train resume and overwrite": lambda s: Case(
        train("--output", str(s.run_copy()), "--resume", "auto", "--overwrite"), ("--resume and --overwrite",)
    ),
    "train output is a file": lambda s: Case(train("--output", str(s.data(CLEAN))), ("data.txt", "not a folder")),
    "train folder in use": lambda s: Case(
        train("--output", str(_lock(s, s.tmp / "busy"))), ("busy", "another ringan run is using this folder")
    ),
    "resume not a checkpoint": lambda s: Case(
        train("--output", str(s.tmp / "o"), "--resume", str(s.tmp)), ("--resume", "not a complete checkpoint folder")
    ),
    "resume malicious optimizer.pt": lambda s: Case(
        train("--output", str(s.tmp / "o"), "--resume", str(_checkpoint_with(s, "optimizer.pt", {"x": Evil(s.tmp)}))),
        ("optimizer.pt", "refused", "pickled call to posix.system"),
    ),
    "resume malicious rng_state.pth": lambda s: Case(
        train("--output", str(s.tmp / "o"), "--resume", str(_checkpoint_with(s, "rng_state.pth", [Evil(s.tmp)]))),
        ("rng_state.pth", "refused"),
    ),
    "resume truncated scheduler.pt": lambda s: Case(
        train("--output", str(s.tmp / "o"), "--resume", str(_checkpoint_with(s, "scheduler.pt", b"PK\x03\x04trunc"))),
        ("scheduler.pt", "not a readable checkpoint file"),
    ),
    "resume trainer_state garbage": lambda s: Case(
        train("--output", str(s.tmp / "o"), "--resume", str(_checkpoint_with(s, "trainer_state.json", b"{"))),
        ("trainer_state.json", "not a valid trainer state"),
    ),
    "resume truncated checkpoint weights": lambda s: Case(
        train(
            "--output",
            str(s.tmp / "o"),
            "--resume",
            str(
                _checkpoint_with(
                    s, "model.safetensors", (s.run / "checkpoint-8" / "model.safetensors").read_bytes()[:999]
                )
            ),
        ),  # fmt: skip
        ("model.safetensors", "not a complete safetensors file"),
    ),
    "resume auto into a malicious latest checkpoint": lambda s: Case(
        train("--output", str(_latest_with_evil(s)), "--resume", "auto"), ("checkpoint-8", "optimizer.pt", "refused")
    ),
    "init-from not a model": lambda s: Case(
        train("--output", str(s.tmp / "o"), "--init-from", str(s.tmp / "nothing")), ("nothing", "no such model folder")
    ),
    "init-from foreign code": lambda s: (
        foreign_model(s),
        Case(train("--output", str(s.tmp / "o"), "--init-from", str(s.model)), ("config.json", "not a Ringan model")),
    )[1],
    "tokenizer folder garbage": lambda s: (
        s.write("tok/tokenizer.json", "}"),
        Case(
            train("--output", str(s.tmp / "o"), "--tokenizer", str(s.tmp / "tok")),
            ("tok/tokenizer.json", "not a valid"),
        ),
    )[1],
    "model options that do not fit": lambda s: Case(
        train("--output", str(s.tmp / "o"), "--hidden-size", "30", "--num-heads", "4"),
        ("model options", "hidden_size (30) must be a multiple of num_attention_heads (4)"),
    ),
    "model options odd head size": lambda s: Case(
        train("--output", str(s.tmp / "o"), "--hidden-size", "12", "--num-heads", "4"),
        ("model options", "must be even"),
    ),
    "more topics than rows": lambda s: Case(
        train("--output", str(s.tmp / "o"), "--num-topics", "3", "--on-overflow", "error"),
        ("40 distinct topics", "--num-topics"),
    ),
    "tensorboard not installed": lambda s: (
        _missing_module(s, "tensorboard"),
        Case(
            train("--output", str(s.tmp / "o"), "--tensorboard"),
            ("tensorboard is not installed", "ringan[tensorboard]"),
        ),
    )[1],
    # ---- convert
    "convert checkpoint missing": lambda s: Case(
        ["convert", "--checkpoint", str(s.tmp / "seed.pt"), "--output", str(s.tmp / "o")],
        ("seed.pt", "no such checkpoint"),
    ),
    "convert malicious pickle": lambda s: (
        torch.save({"w": Evil(s.tmp)}, s.tmp / "seed.pt"),
        Case(
            ["convert", "--checkpoint", str(s.tmp / "seed.pt"), "--output", str(s.tmp / "o")],
            ("seed.pt", "refused", "posix.system"),
        ),
    )[1],
    "convert garbage .pt": lambda s: Case(
        ["convert", "--checkpoint", str(s.write("seed.pt", b"garbage")), "--output", str(s.tmp / "o")],
        ("seed.pt", "not a readable state_dict"),
    ),
    "convert garbage .safetensors": lambda s: Case(
        ["convert", "--checkpoint", str(s.write("seed.safetensors", b"garbage")), "--output", str(s.tmp / "o")],
        ("seed.safetensors", "not a readable state_dict"),
    ),
    "convert not a state_dict": lambda s: (
        torch.save([1, 2, 3], s.tmp / "seed.pt"),
        Case(
            ["convert", "--checkpoint", str(s.tmp / "seed.pt"), "--output", str(s.tmp / "o")],
            ("seed.pt", "does not hold a state_dict of tensors"),
        ),
    )[1],
    "convert another model's tensors": lambda s: (
        torch.save({"encoder.weight": torch.zeros(2, 2)}, s.tmp / "seed.pt"),
        Case(
            ["convert", "--checkpoint", str(s.tmp / "seed.pt"), "--output", str(s.tmp / "o")],
            ("seed.pt", "not a MyGenerativeModel state_dict"),
        ),
    )[1],
    "convert without output": lambda s: (
        torch.save({"a": torch.zeros(1)}, s.tmp / "seed.pt"),
        Case(["convert", "--checkpoint", str(s.tmp / "seed.pt")], ("--output is required",)),
    )[1],
    "convert over a model": lambda s: (
        torch.save({"a": torch.zeros(1)}, s.tmp / "seed.pt"),
        Case(
            ["convert", "--checkpoint", str(s.tmp / "seed.pt"), "--output", str(s.model)],
            ("--output", "holds a model", "--overwrite"),
        ),
    )[1],
    "convert tokenizer missing": lambda s: (
        torch.save({"a": torch.zeros(1)}, s.tmp / "seed.pt"),
        Case(
            [
                "convert",
                "--checkpoint",
                str(s.tmp / "seed.pt"),
                "--output",
                str(s.tmp / "o"),
                "--tokenizer",
                str(s.tmp / "t"),
            ],
            ("t: no such tokenizer folder",),
        ),
    )[1],
    # ---- quantize / export / tokenizer / eval outputs
    "quantize over its input": lambda s: Case(
        ["quantize", "--model", str(s.model), "--output", str(s.model)], ("--output", "is the input")
    ),
    "quantize into its input": lambda s: Case(
        ["quantize", "--model", str(s.model), "--output", str(s.model / "int8")], ("is inside the input",)
    ),
    "quantize over a folder holding its input": lambda s: Case(
        ["quantize", "--model", str(s.model), "--output", str(s.tmp), "--overwrite"], ("holds the input",)
    ),
    "quantize over another model": lambda s: (
        shutil.copytree(s.model, s.tmp / "other"),
        Case(["quantize", "--model", str(s.model), "--output", str(s.tmp / "other")], ("holds a model", "--overwrite")),
    )[1],
    "quantize over a training run": lambda s: (
        s.run_copy(),
        Case(
            ["quantize", "--model", str(s.model), "--output", str(s.tmp / "run"), "--overwrite"],
            ("--output", "holds a training run"),
        ),
    )[1],
    "tokenizer over a training run": lambda s: (
        s.run_copy(),
        Case(["tokenizer", "--output", str(s.tmp / "run"), "--overwrite"], ("--output", "holds a training run")),
    )[1],
    "quantize a quantized model": lambda s: Case(
        ["quantize", "--model", str(quantized(s)), "--output", str(s.tmp / "q4"), "--bits", "4"], ("already quantized",)
    ),
    "quantize a damaged model": lambda s: (
        s.write("model/model.safetensors", b"junk"),
        Case(["quantize", "--model", str(s.model)], ("model.safetensors", "not a complete safetensors file")),
    )[1],
    "export over its input": lambda s: Case(
        ["export", "--model", str(s.model), "--output", str(s.model)], ("--output", "is the input")
    ),
    "export without onnxruntime": lambda s: (
        _missing_module(s, "onnxruntime"),
        Case(["export", "--model", str(s.model)], ("onnxruntime is not installed", "pip install 'ringan[export]'")),
    )[1],
    "tokenizer over a model": lambda s: Case(
        ["tokenizer", "--output", str(s.model), "--overwrite"], ("--output", "holds a model")
    ),
    "tokenizer over a folder": lambda s: (
        s.write("tok/tokenizer.json", "{}"),
        Case(["tokenizer", "--output", str(s.tmp / "tok")], ("tok", "is not empty", "--overwrite")),
    )[1],
    "tokenizer over its data": lambda s: (
        s.write("corpus/a.txt", CLEAN),
        Case(["tokenizer", "--data", str(s.tmp / "corpus"), "--output", str(s.tmp / "corpus")], ("is the input",)),
    )[1],
    "eval results into the model folder": lambda s: Case(
        ev(s, "--json-output", str(s.model / "config.json")), ("--json-output", "inside the model folder")
    ),
    "eval results into a missing folder": lambda s: Case(
        ev(s, "--json-output", str(s.tmp / "no" / "r.json")), ("--json-output", "no such folder")
    ),
    "eval results onto a folder": lambda s: Case(ev(s, "--json-output", str(s.tmp)), ("--json-output", "is a folder")),
    # ---- push (the Hub is never called)
    "push a link out of the folder": lambda s: (
        _no_hub(s),
        Case(
            ["push", "--model", str(_link_readme(s)), "--repo-id", "me/x"],
            ("README.md", "is a link to", "outside the model folder"),
        ),
    )[1],
    "push without a repo id": lambda s: (
        _no_hub(s),
        Case(["push", "--model", str(s.model), "--repo-id", "x"], ("--repo-id", "expected 'user/name'")),
    )[1],
    "push a damaged model": lambda s: (
        _no_hub(s),
        s.write("model/model.safetensors", b"junk"),
        Case(["push", "--model", str(s.model), "--repo-id", "me/x"], ("model.safetensors", "not a complete")),
    )[2],
    "push without modeling code": lambda s: (
        _no_hub(s),
        (s.model / "modeling_ringan.py").unlink(),
        Case(["push", "--model", str(s.model), "--repo-id", "me/x"], ("missing modeling_ringan.py",)),
    )[2],
}


def unlocked(found: dict) -> dict:
    """A snapshot in which a lock file that already existed may have been re-locked (its holder's pid rewritten)."""
    return {k: (v[0],) if k.endswith(LOCK_FILE) else v for k, v in found.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line_and_changes_nothing(name, tmp_path, trained_run, capsys, monkeypatch):
    assert_refused(CASES[name], tmp_path, trained_run, capsys, monkeypatch)


def assert_refused(make: Callable[[Setup], Case], tmp_path, trained_run, capsys, monkeypatch) -> None:
    """Run the case the table row builds: exit 2, one stderr line with its fragments, nothing under `tmp_path`
    written or changed, no code from a folder run."""
    setup = Setup(tmp_path, trained_run, monkeypatch)
    case = make(setup)
    before = unlocked(snapshot(tmp_path))
    library_log = io.StringIO()  # what transformers logs counts as extra stderr lines, as do Python warnings
    handler = logging.StreamHandler(library_log)
    logging.getLogger("transformers").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = main(case.argv)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, FutureWarning))]
    err = capsys.readouterr().err + library_log.getvalue()
    err += "".join(f"{w.category.__name__}: {w.message}\n" for w in shown)
    one_line_error(code, err, case.argv[0], *case.fragments)
    after = unlocked(snapshot(tmp_path))
    assert after == before, sorted(set(after.items()) ^ set(before.items()))[:6]
    assert not (tmp_path / MARKER).exists()


# ------------------------------------------------------------------------------------ correct behaviour


def _run_ok(argv: list[str], capsys) -> str:
    assert main(argv) == 0, capsys.readouterr().err[-3000:]
    return capsys.readouterr().out


def test_invisible_characters_before_headers_and_names_are_normalised(tmp_path, trained_run, capsys):
    """A zero-width space or a no-break space at the start of a header or turn line: the entries are read as they
    look (two entries, two speakers each), never as a phantom turn."""
    text = CLEAN + "\n\u200b==== Topik: B ====\n\n\u00a0Konteks: L.\n\n\u200bSari: hai\n\n\u00a0Bima: halo\n"
    data = tmp_path / "data.txt"
    data.write_text(text, encoding="utf-8")
    out = tmp_path / "r.json"
    _run_ok(["eval", "--model", str(trained_run / "model"), "--data", str(data), "--json-output", str(out)], capsys)
    result = json.loads(out.read_text())
    assert set(result["per_speaker"]) == {"(Topik/Konteks)", "Sari", "Bima"}


def test_resume_auto_on_a_finished_run_says_so_and_trains_nothing(tmp_path, trained_run, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = {k: v for k, v in snapshot(run).items() if k != LOCK_FILE}
    args = ["train", "--output", str(run), "--init-from", "none", "--hidden-size", "32", "--intermediate-size", "64"]
    args += ["--max-length", "96"]
    args += ["--vocab-size", "400", "--batch-size", "4", "--max-steps", "8", "--resume", "auto"]
    printed = _run_ok(args, capsys)
    assert "is finished (step 8 of 8" in printed and "saved:" not in printed
    assert {k: v for k, v in snapshot(run).items() if k != LOCK_FILE} == before


def test_a_ringan_folder_shipping_its_own_modeling_code_loads_the_installed_classes(tmp_path, trained_run, capsys):
    """`model_type: ringan`, but `modeling_ringan.py` (named by auto_map) is replaced by code that writes a marker:
    the CLI uses the installed classes, so the marker is never written."""
    model = tmp_path / "model"
    shutil.copytree(trained_run / "model", model)
    for name in ("modeling_ringan.py", "configuration_ringan.py"):
        (model / name).write_text(f"open({str(tmp_path / MARKER)!r}, 'w').write('ran')\n")
    printed = _run_ok(["generate", "--model", str(model), "--max-new-tokens", "3", "--no-stream"], capsys)
    assert "==== Topik:" in printed and not (tmp_path / MARKER).exists()


def test_pushes_only_what_a_model_needs(tmp_path, trained_run, monkeypatch, capsys):

    model = tmp_path / "model"
    shutil.copytree(trained_run / "model", model)
    (model / "notes.txt").write_text("private notes")
    (model / "scratch").mkdir()
    (model / "scratch" / "big.bin").write_bytes(b"0" * 100)
    (model / "card-link.md").symlink_to(model / "README.md")  # a link inside the folder: not a model file either
    from helpers import fake_hub

    pushed = fake_hub(monkeypatch)
    printed = _run_ok(["push", "--model", str(model), "--repo-id", "me/tiny"], capsys)
    expected = {
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "chat_template.jinja", "README.md", "topic_contexts.json", "configuration_ringan.py", "modeling_ringan.py",
    }  # fmt: skip
    assert expected <= set(pushed["files"]) and all(
        not f.startswith(("notes", "scratch", "card-link")) for f in pushed["files"]
    )
    code = {f for f in pushed["files"] if f.endswith(".py")}
    assert code == {p.name for p in model.glob("*.py")}  # every modeling file (they import each other), nothing else
    assert "leaves out 3 files" in printed


def test_a_real_command_line_refusal_has_no_traceback_and_no_prompt(tmp_path, trained_run):
    """Three table cases again from a real process (the library's own logging and warnings included); stdin says
    `y` to any prompt transformers might show."""
    from cli_helpers import run_cli

    model = tmp_path / "model"
    shutil.copytree(trained_run / "model", model)
    evil_module(model, "evil")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(
        json.dumps({**config, "model_type": "evilmodel", "auto_map": {"AutoConfig": "evil.X"}})
    )
    damaged = tmp_path / "damaged"
    shutil.copytree(trained_run / "model", damaged)
    (damaged / "model.safetensors").write_bytes((trained_run / "model" / "model.safetensors").read_bytes()[:5000])
    torch.save({"w": Evil(tmp_path)}, tmp_path / "seed.pt")
    for args, fragments in [
        (["chat", "--model", str(model)], ("not a Ringan model",)),
        (["eval", "--model", str(damaged)], ("model.safetensors", "cut short")),
        (["convert", "--checkpoint", str(tmp_path / "seed.pt"), "--output", str(tmp_path / "o")], ("refused",)),
    ]:
        result = run_cli(args, cwd=tmp_path, stdin="y\ny\n")
        one_line_error(result.returncode, result.stderr, args[0], *fragments)
    assert not (tmp_path / MARKER).exists() and not (tmp_path / "o").exists()


def test_the_table_is_large():
    assert len(CASES) >= 90, len(CASES)


def test_overwrite_replaces_an_earlier_output_whole_and_never_the_input(tmp_path, trained_run, capsys):
    """Before: `quantize --output` = `--model` wrote the int8 weights over the fp32 ones, then failed."""
    model, q = tmp_path / "model", tmp_path / "q"
    shutil.copytree(trained_run / "model", model)
    before = snapshot(model)
    _run_ok(["quantize", "--model", str(model), "--output", str(q)], capsys)
    assert main(["quantize", "--model", str(model), "--output", str(q), "--bits", "4"]) == 2
    one_line_error(2, capsys.readouterr().err, "quantize", "holds a model", "--overwrite")
    _run_ok(["quantize", "--model", str(model), "--output", str(q), "--bits", "4", "--overwrite"], capsys)
    assert json.loads((q / "config.json").read_text())["quantization"]["bits"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "q"]  # no q.tmp / q.old left
    assert snapshot(model) == before
    tok = tmp_path / "tok"
    _run_ok(["tokenizer", "--output", str(tok), "--vocab-size", "300"], capsys)
    _run_ok(["tokenizer", "--output", str(tok), "--vocab-size", "350", "--overwrite"], capsys)
    assert len(json.loads((tok / "tokenizer.json").read_text())["model"]["vocab"]) == 350
