"""Issue 23, the second probe: each case it found is a row here, refused in one clear line with nothing written
(`REFUSED`, run through `test_bad_inputs`'s harness), or a test of the correct result below; a hypothesis fuzz
test of the dialogue reader closes the file."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bad_inputs import CLEAN, Case, Setup, assert_refused, ev, session_with, train

from ringan.cli import main
from ringan.data import DialogueFormatError, Entry, Turn, normalise, parse, render, render_entry

LINE = json.dumps({"topic": "A", "context": "K.", "turns": [["Sari", "halo"]], "speaker": "Bima"})


def prompts(s: Setup, *lines: str) -> str:
    return str(s.write("p.jsonl", "".join(line + "\n" for line in lines)))


def fifo(name: str = "data.txt") -> str:
    """A named pipe outside the test folder (the harness's snapshot reads every file it finds)."""
    folder = Path(tempfile.mkdtemp())
    os.mkfifo(folder / name)
    return str(folder / name)


def gen(s: Setup, *extra: str) -> list[str]:
    return ["generate", "--model", str(s.model), "--max-new-tokens", "2", *extra]


def user_folder(s: Setup) -> Path:
    s.write("userdir/thesis.docx", "years of work")
    return s.tmp / "userdir"


def weights_with(s: Setup, change: Callable) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(s.model / "model.safetensors")
    tensors["lm_head.weight"] = change(tensors["lm_head.weight"])
    save_file(tensors, s.model / "model.safetensors", metadata={"format": "pt"})


def state(s: Setup, **tensors) -> str:
    return str(session_with(s, tensors={k.replace("__", "."): v for k, v in tensors.items()}))


def chat(s: Setup, session: str) -> list[str]:
    return ["chat", "--model", str(s.model), "--session", session, "--runtime", "torch"]


def model_with_notes(s: Setup) -> Path:
    shutil.copytree(s.model, s.tmp / "old")
    (s.tmp / "old" / "notes.txt").write_text("mine")
    return s.tmp / "old"


REFUSED: dict[str, Callable[[Setup], Case]] = {
    # ---- data lost (each exited 0 and replaced a file it had not made)
    "eval results over its own data file": lambda s: Case(
        ev(s, "--json-output", str(s.tmp / "clean.txt")), ("--json-output", "is the input", "clean.txt")
    ),
    "generate replies over the model's config": lambda s: Case(
        gen(s, "--prompts", prompts(s, LINE), "--output", str(s.model / "config.json")),
        ("--output", "inside the model folder"),
    ),
    "generate replies over the prompts file": lambda s: Case(
        gen(s, "--prompts", prompts(s, LINE), "--output", str(s.tmp / "p.jsonl")), ("--output", "is the input")
    ),
    "quantize --overwrite over a folder of the user's files": lambda s: Case(
        ["quantize", "--model", str(s.model), "--output", str(user_folder(s)), "--overwrite"],
        ("userdir", "'thesis.docx'", "which no ringan verb writes"),
    ),
    "quantize --overwrite over an old model holding the user's notes": lambda s: Case(
        ["quantize", "--model", str(s.model), "--output", str(model_with_notes(s)), "--overwrite"],
        ("'notes.txt'", "which no ringan verb writes"),
    ),
    # ---- hangs
    "data is a named pipe": lambda s: Case(ev(s)[:4] + [fifo()], ("data.txt", "not a regular file")),
    "data is /dev/zero": lambda s: Case(ev(s)[:4] + ["/dev/zero"], ("/dev/zero", "not a regular file")),
    "prompts is a named pipe": lambda s: Case(gen(s, "--prompts", fifo("p.jsonl")), ("p.jsonl", "not a regular file")),
    "train --max-steps 0": lambda s: Case(
        train("--max-steps", "0", "--output", str(s.tmp / "o")), ("--max-steps", "-1 (use --epochs)")
    ),
    "data Topik of a megabyte": lambda s: Case(
        ev(s)[:4] + [str(s.data(CLEAN.replace("Topik: A", "Topik: " + "a" * 1_000_000)))],
        ("data.txt:1:", "topic has 1,000,000 characters, at most 200"),
    ),
    "data Konteks over the limit": lambda s: Case(
        ev(s)[:4] + [str(s.data(CLEAN.replace("K.", "k " * 3000)))], ("data.txt:1:", "at most 5,000")
    ),
    "prompts line of two megabytes": lambda s: Case(
        gen(s, "--prompts", prompts(s, LINE, json.dumps({"topic": "x" * 2_000_000}))),
        ("p.jsonl:2:", "longer than 1,000,000 characters"),
    ),
    # ---- silent or wrong acceptances
    "train --init-from base with new-model sizes": lambda s: Case(
        ["train", "--init-from", "base", "--hidden-size", "32", "--num-layers", "1", "--output", str(s.tmp / "o")],
        ("--hidden-size --num-layers with --init-from base", "--init-from none"),
    ),
    "train --output ''": lambda s: Case(train("--output", ""), ("--output", "expected a folder name")),
    "generate --output without --prompts": lambda s: Case(
        gen(s, "--output", str(s.tmp / "x.jsonl")), ("--output", "only with --prompts")
    ),
    "generate --context ''": lambda s: Case(gen(s, "--context", ""), ("--context", "non-empty")),
    "generate --topic forging a header": lambda s: Case(
        gen(s, "--topic", "A\n\n==== Topik: B ====", "--context", "K."), ("--topic", "one line")
    ),
    "generate --topic holding ====": lambda s: Case(
        gen(s, "--topic", "A ==== Topik: B", "--context", "K."), ("--topic", "'===='")
    ),
    "data speaker name with a zero-width space": lambda s: Case(
        ev(s)[:4] + [str(s.data(CLEAN.replace("Bima:", "Bi\u200bma:")))], ("data.txt:7:", "invisible character")
    ),
    "data NUL byte": lambda s: Case(
        ev(s)[:4] + [str(s.data(CLEAN.replace("halo", "ha\x00lo")))], ("data.txt:5:", "control character U+0000")
    ),
    "prompts turns as an object": lambda s: Case(
        gen(s, "--prompts", prompts(s, json.dumps({"turns": {"ab": 1}, "speaker": "B"}))),
        ("p.jsonl:1:", '"turns" must be a list of ["Name", "text"] pairs'),
    ),
    "prompts Topik forging a header": lambda s: Case(
        gen(s, "--prompts", prompts(s, json.dumps({"topic": "A\n==== Topik: B ====", "speaker": "B"}))),
        ("p.jsonl:1:", "topic must be one line"),
    ),
    # ---- damaged model folders, accepted before
    "config.json boolean as a string": lambda s: (
        s.config(use_rope="yes"),
        Case(ev(s), ("config.json", "use_rope must be true or false", "'yes'")),
    )[1],
    "weights of int64": lambda s: (
        weights_with(s, lambda t: t.long()),
        Case(ev(s), ("model.safetensors", "another kind of number", "lm_head.weight: I64")),
    )[1],
    "weights holding NaN": lambda s: (
        weights_with(s, lambda t: t * float("nan")),
        Case(ev(s), ("model.safetensors", "lm_head.weight holds NaN or infinite values")),
    )[1],
    # ---- session files, accepted before
    "session token ids as floats": lambda s: Case(
        chat(s, state(s, token_ids=torch.tensor([1.0, 5.0]))), ("made.safetensors", "field token_ids", "float32")
    ),
    "session seen_tokens -5": lambda s: Case(
        chat(s, state(s, cache__seen_tokens=torch.tensor([-5]))), ("made.safetensors", "cache.seen_tokens: -5")
    ),
    "session seen_tokens 0": lambda s: Case(
        chat(s, state(s, cache__seen_tokens=torch.tensor([0]))), ("made.safetensors", "cache.seen_tokens: 0")
    ),
    "session stray pending": lambda s: Case(
        chat(s, str(session_field(s, pending="xyz"))), ("made.safetensors", "field pending", "'xyz'")
    ),
    "session int32 state": lambda s: Case(
        chat(s, state(s, cache__layers__0__state=torch.zeros(1, 4, 8, 8, dtype=torch.int32))),
        ("made.safetensors", "cache.layers.0.state", "torch.int32, expected (1, 4, 8, 8) torch.float32"),
    ),
    # ---- tracebacks and crashes before
    "session condition of another width": lambda s: Case(
        chat(s, state(s, cache__condition=torch.zeros(1, 1, 7))), ("made.safetensors", "cache.condition: (1, 1, 7)")
    ),
    "session NaN state": lambda s: Case(
        chat(s, state(s, cache__layers__0__state=torch.full((1, 4, 8, 8), float("nan")))),
        ("made.safetensors", "cache.layers.0.state: holds NaN"),
    ),
    "config.json rms_norm_eps -1": lambda s: (
        s.config(rms_norm_eps=-1),
        Case(ev(s), ("config.json", "rms_norm_eps must be a finite number > 0", "-1")),
    )[1],
    "config.json rope_theta 0": lambda s: (s.config(rope_theta=0), Case(ev(s), ("rope_theta must be a finite",)))[1],
    "config.json rope_theta NaN": lambda s: (
        s.config(rope_theta=float("nan")),
        Case(ev(s), ("rope_theta must be a finite number > 0, got nan",)),
    )[1],
    "config.json rope_theta text": lambda s: (
        s.config(rope_theta="abc"),
        Case(ev(s), ("rope_theta must be a finite number > 0, got 'abc'",)),
    )[1],
    "config.json chunk_size 1e9": lambda s: (
        s.config(chunk_size=10**9),
        Case(ev(s), ("config.json", "chunk_size must be an integer >= 1 and <= 65,536")),
    )[1],
    "config.json nested too deeply": lambda s: (
        s.write("model/config.json", "[" * 100_000 + "]" * 100_000),
        Case(ev(s), ("config.json", "nested too deeply")),
    )[1],
    "prompts nested too deeply": lambda s: Case(
        gen(s, "--prompts", prompts(s, "[" * 100_000 + "]" * 100_000)), ("p.jsonl:1:", "nested too deeply")
    ),
    "options file nested too deeply": lambda s: Case(
        ["eval", "--config", str(s.write("o.json", "[" * 100_000 + "]" * 100_000))], ("o.json", "nested too deeply")
    ),
    "YAML options with a key given twice": lambda s: Case(
        ["eval", "--config", str(s.write("o.yaml", "batch_size: 2\nbatch_size: 3\n"))],
        ("o.yaml", "'batch_size' is given twice (line 2)"),
    ),
    "YAML alias bomb": lambda s: Case(
        ["eval", "--config", str(s.write("o.yaml", YAML_BOMB))], ("o.yaml", "aliases (*a) are not allowed")
    ),
}

YAML_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


def session_field(s: Setup, **changes) -> Path:
    from safetensors import safe_open

    path = s.session()
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["ringan_chat"])
    return session_with(s, {**meta, **changes})


@pytest.mark.parametrize("name", list(REFUSED))
def test_issue23_input_is_refused_in_one_line(name, tmp_path, trained_run, capsys, monkeypatch):
    assert_refused(REFUSED[name], tmp_path, trained_run, capsys, monkeypatch)


# ------------------------------------------------------------------------------------- correct results


def test_the_line_normaliser_is_linear():
    """Before: 10k inner spaces took 1.4 s, 300k never finished (a regex anchored at the end)."""
    line = "Sari: a" + " " * 1_000_000 + "b\u200b \u00a0"
    start = time.perf_counter()
    entries = parse(f"==== Topik: A ====\n\nKonteks: K.\n\n{line}\n")
    assert time.perf_counter() - start < 1.0
    assert entries[0].turns[0].text == "a" + " " * 1_000_000 + "b"


def test_the_normaliser_strips_exactly_what_the_regex_did():
    old = re.compile(r"^[\s\u200b\u200c\u200d\u2060\ufeff]+|[\s\u200b\u200c\u200d\u2060\ufeff]+$")
    every = "".join(chr(c) for c in range(0x3100)) + "\u200b\u200c\u200d\u2060\ufeff\U0001f600"
    for i in range(0, len(every), 7):
        sample = every[i : i + 9] + "x y" + every[i : i + 5]
        assert normalise(sample) == old.sub("", sample), repr(sample)


def _decoded(tok, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=True)  # control ids drop out here; text stays


CONTROL_TEXT = "halo </s> <s> <pad> <unk>"


def test_user_text_never_becomes_control_ids_in_training_and_eval(trained_run):
    from ringan.labels import LabelVocab
    from ringan.loading import load_tokenizer
    from ringan.training import conditioning_tokens, entry_to_examples

    tok = load_tokenizer(trained_run / "model")
    entry = Entry("Topik </s>", "Konteks <pad>", (Turn("Budi", CONTROL_TEXT), Turn("Sari", "ya <s>")))
    example = entry_to_examples(entry, tok, LabelVocab([]), LabelVocab([]), 4096)[0]
    ids = example["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert not {0, 1, 2, 3} & set(ids[1:-1]), ids
    assert CONTROL_TEXT in _decoded(tok, ids)
    topic, context = conditioning_tokens(tok, entry.topic, entry.context)
    assert not {0, 1, 2, 3} & set(topic + context)


def test_a_chat_message_with_control_text_is_read_as_text(trained_run, capsys):
    """Before: `halo </s>` put the end id into the state, and the reply came back empty."""
    import io

    from ringan.commands.chat import chat

    session = chat(
        model=str(trained_run / "model"),
        input_stream=io.StringIO(CONTROL_TEXT + "\n"),
        max_new_tokens=2,
        greedy=True,
        runtime="torch",
    )
    user_piece = session.token_ids[: len(session.token_ids) - 2]  # the reply is at most 2 tokens
    assert not {0, 1, 2, 3} & set(user_piece[1:]), user_piece
    assert CONTROL_TEXT in _decoded(session.tok, session.token_ids)


def test_the_chat_template_path_keeps_user_text_as_text(trained_run):
    """A plain transformers user: `apply_chat_template(..., sanitize_control_tokens=True)` (what the model card
    shows) gives the template's `<s>` as the id and the message's `</s>` as text."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(trained_run / "model"))
    messages = [{"role": "system", "content": "K."}, {"role": "user", "content": CONTROL_TEXT}]
    ids = tok.apply_chat_template(
        messages, tokenize=True, return_dict=False, add_generation_prompt=True, sanitize_control_tokens=True
    )
    assert ids[0] == tok.bos_token_id and not {0, 1, 2, 3} & set(ids[1:])
    card = (trained_run / "model" / "README.md").read_text()
    assert "sanitize_control_tokens=True" in card


def test_every_encoding_of_text_in_the_package_goes_through_encode_text():
    """The one shared place: a direct `tok(...)` / `tokenizer(...)` call would read `</s>` in text as the id."""
    import ast

    root = Path(__file__).resolve().parents[1] / "ringan"
    found = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        allowed = {
            id(node)
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef) and f.name == "encode_text"
            for node in ast.walk(f)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and id(node) not in allowed:
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if name in ("tok", "tokenizer"):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == []


def test_generate_writes_each_batch_of_replies_as_it_is_made(tmp_path, trained_run, capsys, monkeypatch):
    """Before: every reply was written at the end, so an interrupt lost them all. The run is interrupted in its
    second batch: the first batch's replies are in the file."""
    from ringan.decoding import Decoder

    real, calls = Decoder.generate, []

    def interrupted_in_the_second_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Decoder, "generate", interrupted_in_the_second_batch)
    rows = [
        json.dumps({"topic": "A", "context": "K.", "turns": [["Sari", f"halo {i}"]], "speaker": "Bima"})
        for i in range(5)
    ]
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(rows) + "\n")
    out = tmp_path / "r.jsonl"
    argv = ["generate", "--model", str(trained_run / "model"), "--prompts", str(p), "--output", str(out)]
    assert main([*argv, "--batch-size", "2", "--max-new-tokens", "2"]) == 130
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == 2 and all("reply" in r for r in written)


# ---------------------------------------------------------------------------------------------- fuzzing

CORPUS = sorted((Path(__file__).resolve().parents[1] / "ringan" / "corpus").glob("*.txt"))
REAL = [render_entry(e) for path in CORPUS[:3] for e in parse(path.read_text(encoding="utf-8"), str(path))[:4]]
PIECES = ["=", "====", ":", "\n", "\n\n", " ", "\t", "\u200b", "\u00a0", "\x00", "\r", "Konteks:", "==== Topik: ",
          " ====", "</s>", "<s>", "Budi:", "\ufeff", "é", "👋", "a" * 300]  # fmt: skip


@st.composite
def mutated(draw) -> str:
    text = draw(st.sampled_from(REAL)) + draw(st.sampled_from(["", "\n" + REAL[0]]))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.one_of(st.sampled_from(PIECES), st.text(max_size=5)))
        cut = draw(st.integers(0, 40))
        if kind == "insert":
            text = text[:at] + piece + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + cut :]
        else:
            text = text[:at] + piece + text[at + len(piece) :]
    return text


@settings(max_examples=150, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzz_the_dialogue_reader_over_mutated_real_entries(text):
    """Each mutation of real entries is either refused with a `file:line:` error naming a line of the input, or
    read faithfully: what was read renders and reads back the same, and every topic, Konteks, name and
    utterance read is text of the input. Hypothesis's deadline bounds the time per input (1 s)."""
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    try:
        entries = parse(text, "fuzz.txt")
    except DialogueFormatError as err:
        assert 1 <= err.line <= len(lines), (err.line, len(lines))
        assert str(err).startswith(f"fuzz.txt:{err.line}: ") and "\n" not in str(err) and len(str(err)) < 800
        return
    assert parse(render(entries)) == entries
    for entry in entries:
        for part in (
            entry.topic,
            entry.context,
            *(f"{t.speaker}" for t in entry.turns),
            *(t.text for t in entry.turns),
        ):
            assert part in text


def test_a_run_whose_loss_becomes_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """Before: `--learning-rate 1e30` saved a NaN model as the final model and exited 0. Within the limits a weight
    decay of 10 at a learning rate of 10 multiplies every weight by -99 each step: the loss is NaN by step 4."""
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "run"
    argv = train("--output", str(out), "--vocab-size", "300", "--num-heads", "4", "--batch-size", "4")
    argv += ["--learning-rate", "10", "--weight-decay", "10", "--max-steps", "8", "--save-steps", "2"]
    assert main([*argv, "--eval-steps", "2", "--no-keep-best", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if "error:" in x]
    assert len(line) == 1 and "the training loss became nan" in line[0] and "Traceback" not in err, err[-2000:]
    assert "the last good checkpoint is" in line[0] and "--learning-rate" in line[0]
    assert not (out / "model").exists()
    kept = sorted(out.glob("checkpoint-*"))
    assert kept and f"{kept[-1]} (--resume it)" in line[0]
    assert all(torch.isfinite(t).all() for t in load_file(kept[-1] / "model.safetensors").values())


def test_help_answers_without_importing_torch_or_transformers():
    """Before: `ringan --help` took 5.6 s, every verb 5-8 s before doing anything (torch, transformers and ONNX
    Runtime imported at start-up). The modules are counted, not timed: a busy machine cannot make it flaky."""
    import subprocess
    import sys

    from cli_helpers import ROOT

    from ringan.commands import VERBS

    script = (
        "import contextlib, io, json, sys\n"
        "from ringan.cli import main\n"
        f"for argv in [['--help'], *[[v, '--help'] for v in {list(VERBS)!r}]]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "heavy = ('torch', 'transformers', 'tokenizers', 'onnxruntime', 'safetensors', 'datasets', 'numpy', 'yaml')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ringan", "--help"], capture_output=True, env=env, timeout=60, check=True)
    assert time.perf_counter() - start < 3.0  # ~0.3 s on a quiet machine; 5.6 s before


def test_import_ringan_then_transformers_registers_the_auto_classes():
    """The package loads its classes lazily, yet `import ringan` still makes `AutoConfig` know `ringan`."""
    import subprocess
    import sys

    from cli_helpers import ROOT

    script = (
        "import sys, ringan\n"
        "assert 'torch' not in sys.modules\n"
        "from transformers import AutoConfig, AutoModelForCausalLM\n"
        "config = AutoConfig.for_model('ringan', hidden_size=32, num_attention_heads=4)\n"
        "print(type(config).__name__, AutoModelForCausalLM._model_mapping[type(config)].__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["RinganConfig", "RinganForCausalLM"]


def test_push_takes_the_standard_list_form_of_auto_map(tmp_path, trained_run, monkeypatch, capsys):
    """Before: `"AutoTokenizer": ["x.Tok", null]` in config.json ended in an AttributeError."""

    model = tmp_path / "model"
    shutil.copytree(trained_run / "model", model)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"]["AutoTokenizer"] = [None, "modeling_ringan.RinganForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    from helpers import fake_hub

    pushed = fake_hub(monkeypatch)
    assert main(["push", "--model", str(model), "--repo-id", "me/tiny"]) == 0, capsys.readouterr().err[-2000:]
    assert {"config.json", "modeling_ringan.py", "configuration_ringan.py"} <= set(pushed["files"])


def test_quantize_writes_the_package_auto_map_not_the_source_folder(tmp_path, trained_run, capsys):
    """Before: quantizing a folder whose config.json named other code (`"AutoModel": "evil.Model"`) kept that entry
    in the quantized folder's config, beside the package's modeling files."""
    model = tmp_path / "model"
    shutil.copytree(trained_run / "model", model)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil.Model", "AutoModelForSeq2SeqLM": "evil.Other"}
    (model / "config.json").write_text(json.dumps(config))
    code = main(["quantize", "--model", str(model), "--output", str(tmp_path / "q8")])
    assert code == 0, capsys.readouterr().err[-2000:]
    assert json.loads((tmp_path / "q8" / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_ringan.RinganConfig",
        "AutoModel": "modeling_ringan.RinganModel",
        "AutoModelForCausalLM": "modeling_ringan.RinganForCausalLM",
    }
    assert not list((tmp_path / "q8").glob("evil*"))


@pytest.mark.parametrize(
    ("name", "content"),
    [("trainer_state.json", "state"), ("rng_state.pth", {"python": 5, "numpy": "x", "cpu": 3})],
)
def test_resume_from_a_checkpoint_holding_values_of_the_wrong_kind_is_one_line(
    name, content, tmp_path, trained_run, capsys
):
    """Before: a `trainer_state.json` or `rng_state.pth` that parses but holds the wrong kinds of values ended in a
    TypeError from inside the Trainer."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "model").rename(tmp_path / "model")  # an unfinished run: resuming trains on
    target = run / "checkpoint-8" / name
    if name.endswith(".json"):
        state = json.loads(target.read_text())
        state.update({"log_history": 5, "best_metric": "x", "trial_params": 3, "stateful_callbacks": [1]})
        target.write_text(json.dumps(state))
    else:
        torch.save(content, target)
    args = train("--output", str(run), "--resume", "auto", "--vocab-size", "400", "--num-heads", "4")
    code = main([*args, "--max-length", "96", "--batch-size", "4", "--max-steps", "12", "--threads", "1"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert "checkpoint-8" in errors[0] and "damaged checkpoint" in errors[0], errors[0]


def _tiny_model():
    return _other_model()


API_MISUSE = {  # Python API calls that ended in low-level errors (or returned every position silently)
    "logits_to_keep=-1": (lambda ids: {"input_ids": ids, "logits_to_keep": -1}, "logits_to_keep must be >= 0"),
    "labels of another length": (
        lambda ids: {"input_ids": ids, "labels": ids[:, :3]},
        "labels must have the shape of the input ids (2, 6), got (2, 3)",
    ),
    "labels out of the vocabulary": (
        lambda ids: {"input_ids": ids, "labels": ids + 1000},
        "labels must be token ids in [0, 300) or -100",
    ),
    "inputs_embeds of another width": (
        lambda ids: {"inputs_embeds": torch.zeros(1, 3, 7)},
        "inputs_embeds must have hidden_size=32 features, got 7",
    ),
    "an empty batch": (lambda ids: {"input_ids": ids[:0]}, "the batch is empty"),
    "a cache from a wider model": (
        lambda ids: {"input_ids": ids, "cache": _other_model(hidden_size=64)(ids, use_cache=True).cache},
        "cache layers.0.conv: shape (2, 192, 3), expected (2, 96, 3)",
    ),
    "a cache from a deeper model": (
        lambda ids: {"input_ids": ids, "cache": _other_model(num_hidden_layers=3)(ids, use_cache=True).cache},
        "the cache holds 3 layers but the model has 2",
    ),
    "a cache from a linear-attention model": (
        lambda ids: {"input_ids": ids, "cache": _other_model(attention_type="linear")(ids, use_cache=True).cache},
        "cache layers.0.normalizer: shape (2, 4, 8), expected no such tensor for this model",
    ),
}


def _other_model(**sizes):
    from ringan.modeling import RinganConfig, RinganForCausalLM

    fields = {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, **sizes}
    return RinganForCausalLM(RinganConfig(**fields)).eval()


@pytest.mark.parametrize("name", list(API_MISUSE))
def test_python_api_misuse_is_a_clear_value_error(name):
    make, message = API_MISUSE[name]
    ids = torch.randint(4, 300, (2, 6))
    with pytest.raises(ValueError, match=re.escape(message)):
        _tiny_model()(**make(ids))


def test_labels_all_ignored_give_a_zero_loss_not_nan():
    ids = torch.randint(4, 300, (2, 6))
    loss = _tiny_model()(ids, labels=torch.full((2, 6), -100)).loss
    assert loss.item() == 0.0 and loss.requires_grad
