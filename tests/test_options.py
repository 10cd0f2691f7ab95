"""Typed verb options: every bad value, from a flag or a config file, is one line naming the option (exit 2);
config values get the flags' conversion; unknown and misspelt options are refused with close matches."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ringan.cli import build_parser, main, parse_command_line
from ringan.commands import VERBS
from ringan.commands.train import TrainOptions, train
from ringan.errors import OptionError
from ringan.modeling.configuration_ringan import ATTENTION_TYPES
from ringan.options import option_fields

ROOT = Path(__file__).resolve().parents[1]

# (verb, option, bad value as typed, what the message says was expected)
BAD_VALUES = [
    ("train", "hidden_size", "0", "an integer in [1, 16384]"),
    ("train", "hidden_size", "3.5", "an integer in [1, 16384]"),
    ("train", "hidden_size", "many", "an integer in [1, 16384]"),
    ("train", "num_layers", "0", "an integer in [1, 256]"),
    ("train", "num_heads", "0", "an integer in [1, 1024]"),
    ("train", "intermediate_size", "-4", "an integer in [1, 65536]"),
    ("train", "vocab_size", "0", "an integer in [260, 262144]"),
    ("train", "num_topics", "0", "an integer in [1, 1000000]"),
    ("train", "num_contexts", "0", "an integer in [1, 1000000]"),
    ("train", "max_length", "1", "an integer in [2, 131072]"),
    ("train", "batch_size", "0", "an integer in [1, 65536]"),
    ("train", "grad_accum", "0", "an integer in [1, 65536]"),
    ("train", "learning_rate", "0", "a number in (0, 10]"),
    ("train", "learning_rate", "-0.003", "a number in (0, 10]"),
    ("train", "learning_rate", "nan", "a number in (0, 10]"),
    ("train", "learning_rate", "inf", "a number in (0, 10]"),
    ("train", "learning_rate", "fast", "a number in (0, 10]"),
    ("train", "weight_decay", "-0.1", "a number in [0, 10]"),
    ("train", "epochs", "0", "a number in (0, 100000]"),
    ("train", "warmup_ratio", "1.5", "a number in [0, 1]"),
    ("train", "warmup_ratio", "-0.1", "a number in [0, 1]"),
    ("train", "dropout", "1", "a number in [0, 1)"),
    ("train", "threads", "-1", "an integer in [0, 1024]"),
    ("train", "eval_steps", "0", "an integer >= 1"),
    ("train", "save_steps", "0", "an integer >= 1"),
    ("train", "logging_steps", "0", "an integer >= 1"),
    ("train", "save_total_limit", "0", "an integer >= 1"),
    ("train", "validation_fraction", "1", "a number in [0, 1)"),
    ("train", "validation_fraction", "-0.5", "a number in [0, 1)"),
    ("train", "on_overflow", "drop", "one of unknown, error"),
    ("train", "attention_type", "quadratic", "one of " + ", ".join(ATTENTION_TYPES)),
    ("eval", "max_length", "1", "an integer in [2, 131072]"),
    ("eval", "batch_size", "0", "an integer in [1, 65536]"),
    ("eval", "threads", "-2", "an integer in [0, 1024]"),
    ("generate", "max_new_tokens", "0", "an integer in [1, 131072]"),
    ("generate", "num_turns", "0", "an integer >= 1"),
    ("generate", "top_p", "0", "a number in (0, 1]"),
    ("generate", "top_p", "1.5", "a number in (0, 1]"),
    ("generate", "temperature", "0", "a number in [0.01, 100]"),
    ("generate", "top_k", "-1", "an integer in [0, 1000000]"),
    ("generate", "repetition_penalty", "0", "a number in [0.01, 100]"),
    ("chat", "top_p", "2", "a number in (0, 1]"),
    ("chat", "temperature", "-1", "a number in [0.01, 100]"),
    ("chat", "max_new_tokens", "0", "an integer in [1, 131072]"),
    ("quantize", "bits", "3", "one of 8, 4"),
    ("quantize", "group_size", "3", "an even integer in [0, 65536]"),
    ("quantize", "group_size", "-2", "an even integer in [0, 65536]"),
    ("export", "format", "tflite", "one of onnx"),
    ("export", "quantize", "int2", "one of none, int8, int4"),
    ("convert", "source", "llama", "one of seed"),
    ("quickstart", "threads", "-1", "an integer in [0, 1024]"),
    # issue 23: absurd sizes and counts, refused with the limit the help states (before: allocator errors, a
    # Rust abort, a panic, or a run without end)
    ("train", "hidden_size", "1000000000", "an integer in [1, 16384]"),
    ("train", "vocab_size", "1000000000000", "an integer in [260, 262144]"),
    ("train", "vocab_size", "1", "an integer in [260, 262144]"),
    ("train", "num_topics", "10000000000", "an integer in [1, 1000000]"),
    ("train", "max_steps", "99999999999999999999", "an integer in [-1, 1000000000]"),
    ("train", "max_steps", "-5", "an integer in [-1, 1000000000]"),
    ("train", "epochs", "1e308", "a number in (0, 100000]"),
    ("train", "learning_rate", "1e30", "a number in (0, 10]"),
    ("train", "weight_decay", "1e308", "a number in [0, 10]"),
    ("train", "threads", "1000000", "an integer in [0, 1024]"),
    ("generate", "temperature", "1e-300", "a number in [0.01, 100]"),
    ("generate", "repetition_penalty", "1e-300", "a number in [0.01, 100]"),
    ("generate", "batch_size", "1000000000", "an integer in [1, 4096]"),
    ("quantize", "group_size", "1000000000", "an even integer in [0, 65536]"),
    ("tokenizer", "min_frequency", "-5", "an integer in [1, 2147483648]"),
    ("tokenizer", "vocab_size", "1", "an integer in [260, 262144]"),
]


def assert_one_line_error(code: int, err: str, verb: str, *names: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"ringan {verb}: error: ") and "Traceback" not in err, err
    for name in names:
        assert name in lines[0], (name, err)
    return lines[0]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@pytest.mark.parametrize(("verb", "name", "value", "expected"), BAD_VALUES)
def test_bad_flag_value_is_one_line(verb, name, value, expected, capsys, tmp_path):
    code = main([verb, flag(name), value, *(["--output", str(tmp_path / "o")] if verb == "train" else [])])
    line = assert_one_line_error(code, capsys.readouterr().err, verb)
    shown = repr(value) if not re.fullmatch(r"-?[\d.e-]+|nan|inf", value) else None
    assert re.fullmatch(rf"ringan {verb}: error: {flag(name)}: expected {re.escape(expected)}, got .+", line), line
    if shown:
        assert line.endswith(f"got {shown}"), line
    assert not (tmp_path / "o").exists()  # refused before any work


@pytest.mark.parametrize(("verb", "name", "value", "expected"), BAD_VALUES)
def test_bad_config_value_is_one_line(verb, name, value, expected, capsys, tmp_path):
    config = tmp_path / "options.yaml"
    config.write_text(f"{name}: {value}\n")
    line = assert_one_line_error(main([verb, "--config", str(config)]), capsys.readouterr().err, verb, str(config))
    assert f"{config}: {name}: expected {expected}, got " in line, line


def test_errors_from_the_real_command_line_have_no_traceback(tmp_path):
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"top_p": 0.9}))
    env = {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    for args, names in [
        (["train", "--hidden-size", "0"], ["--hidden-size"]),
        (["train", "--config", str(config)], [str(config), "top_p", "unknown option"]),
        (["generate", "--top-p", "7"], ["--top-p"]),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "ringan", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert_one_line_error(result.returncode, result.stderr, args[0], *names)


def test_misspelt_flag_names_it_and_lists_close_matches(capsys):
    line = assert_one_line_error(main(["train", "--hidden-sise", "32"]), capsys.readouterr().err, "train")
    assert line == "ringan train: error: --hidden-sise: unknown option (did you mean --hidden-size?)"
    # a prefix of a flag is not taken for the flag
    line = assert_one_line_error(main(["train", "--hidden", "32"]), capsys.readouterr().err, "train")
    assert "--hidden:" in line and "--hidden-size" in line
    line = assert_one_line_error(main(["generate", "--temprature=0.5"]), capsys.readouterr().err, "generate")
    assert "--temprature" in line and "--temperature" in line


def test_unknown_config_key_names_the_file_and_close_matches(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text("hidden_sise: 32\n")
    line = assert_one_line_error(main(["train", "--config", str(config)]), capsys.readouterr().err, "train")
    assert line == f"ringan train: error: {config}: hidden_sise: unknown option (did you mean hidden_size?)"
    config.write_text("- not\n- a mapping\n")
    assert_one_line_error(main(["train", "--config", str(config)]), capsys.readouterr().err, "train", str(config))
    assert_one_line_error(
        main(["train", "--config", str(tmp_path / "missing.yaml")]), capsys.readouterr().err, "train", "missing.yaml"
    )


def test_config_values_are_converted_like_flags(tmp_path):
    config = tmp_path / "train.yaml"
    # YAML 1.1 reads 3e-3 as a string; the flag's parse makes it a float all the same
    config.write_text("learning_rate: 3e-3\nepochs: 2\ndata: one.txt\nmax-length: '64'\npack: true\n")
    verb, options = parse_command_line(["train", "--config", str(config)])
    assert verb == "train" and isinstance(options, TrainOptions)
    assert options.learning_rate == 0.003 and type(options.learning_rate) is float
    assert options.epochs == 2.0 and type(options.epochs) is float
    assert options.data == ["one.txt"] and options.max_length == 64 and options.pack is True
    _, flags = parse_command_line(["train", "--learning-rate", "3e-3", "--epochs", "2", "--data", "one.txt"])
    assert (flags.learning_rate, flags.epochs, flags.data) == (options.learning_rate, options.epochs, options.data)
    # flags override the file; defaults fill the rest
    _, both = parse_command_line(["train", "--config", str(config), "--learning-rate", "1e-4", "--no-pack"])
    assert both.learning_rate == 1e-4 and both.pack is False and both.max_length == 64
    assert both.hidden_size == TrainOptions().hidden_size


def test_config_types_are_checked(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    for text, name in [("hidden_size: true\n", "hidden_size"), ("pack: 'yes'\n", "pack"), ("data: {a: 1}\n", "data")]:
        config.write_text(text)
        assert_one_line_error(main(["train", "--config", str(config)]), capsys.readouterr().err, "train", name)


def test_python_api_checks_options_the_same_way():
    with pytest.raises(OptionError, match=r"^hidden_size: expected an integer in \[1, 16384\], got 0$"):
        TrainOptions(hidden_size=0)
    with pytest.raises(OptionError, match=r"hidden_sise: unknown option \(did you mean hidden_size\?\)"):
        train(hidden_sise=32)
    options = TrainOptions.build(TrainOptions(max_steps=3), {"learning_rate": "1e-3"})
    assert options.max_steps == 3 and options.learning_rate == 1e-3


def test_every_verb_help_prints_each_default_once(capsys):
    parser = build_parser()
    for verb, spec in VERBS.items():
        for name, (_, _, check) in option_fields(spec.options).items():
            assert "default" not in check.help.lower(), (verb, name, check.help)  # argparse help adds it once
        with pytest.raises(SystemExit):
            parser.parse_args([verb, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text and text.count("(default: (default") == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["quantize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: one scale per row for int8, 32 for int4)" in text and "{8,4}" in text
