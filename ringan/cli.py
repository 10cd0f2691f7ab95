"""`ringan`: one command-line entry point for every verb.

Each verb is a typed function below; its docstring is the `--help`. Every verb also takes
`--config FILE` (YAML or JSON): its keys become the defaults, and command-line flags override them.
Errors in the user's input print one line and exit with status 2; set `RINGAN_DEBUG=1` for tracebacks.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path

from .data import DialogueFormatError


class UserError(Exception):
    """A problem with what the user asked for: shown as one line, no traceback."""


# ------------------------------------------------------------------------------------------------ verbs


def tokenizer(
    data: list[str] | None = None,
    output: str = "runs/tokenizer",
    vocab_size: int = 10000,
    text: list[str] | None = None,
    min_frequency: int = 2,
) -> None:
    """Train the byte-level BPE tokenizer on dialogue files (and optional plain text).

    Args:
        data: dialogue files or folders (default: the corpus shipped with ringan).
        output: folder to save the tokenizer to (loads with AutoTokenizer.from_pretrained).
        vocab_size: at most this many tokens (a small corpus yields fewer).
        text: extra plain-text files, one paragraph per line.
        min_frequency: a merge needs a pair seen at least this often.
    """
    from .app import train_tokenizer_job

    train_tokenizer_job(data, output, vocab_size, text or [], min_frequency)


def train(
    data: list[str] | None = None,
    output: str = "runs/ringan",
    tokenizer: str | None = None,
    text: list[str] | None = None,
    init_from: str | None = None,
    resume: str | None = None,
    attention_type: str = "linear",
    hidden_size: int = 256,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 1024,
    num_topics: int = 50,
    num_contexts: int = 100,
    dropout: float = 0.1,
    vocab_size: int = 10000,
    max_length: int = 1024,
    pack: bool = False,
    batch_size: int = 8,
    grad_accum: int = 1,
    learning_rate: float = 3e-3,
    epochs: float = 10.0,
    max_steps: int = -1,
    warmup_ratio: float = 0.05,
    weight_decay: float = 0.01,
    eval_steps: int = 50,
    save_steps: int = 50,
    save_total_limit: int = 2,
    logging_steps: int = 10,
    validation_fraction: float = 0.1,
    on_overflow: str = "unknown",
    seed: int = 42,
    threads: int = 0,
    bf16: bool = False,
    tensorboard: bool = False,
    gradient_checkpointing: bool = False,
    keep_best: bool = True,
) -> None:
    """Train a Ringan model on dialogue files with the Hugging Face Trainer (from scratch or from a checkpoint).

    Evaluates perplexity and bits per byte on the validation split at every eval, logs to
    OUTPUT/metrics.csv (and TensorBoard with --tensorboard), keeps complete checkpoints in OUTPUT,
    and saves the final model with its tokenizer and model card to OUTPUT/model.

    Args:
        data: dialogue files or folders (default: the corpus shipped with ringan).
        output: run folder (checkpoints, metrics.csv, model/).
        tokenizer: a saved tokenizer folder; default: train one on the data (saved in OUTPUT/model).
        text: plain-text files mixed in (one paragraph per line), e.g. prose for pre-training.
        init_from: a saved model folder to continue from (fine-tuning); its tokenizer is reused.
        resume: 'auto' (latest checkpoint in OUTPUT, if any) or a checkpoint folder: restores optimizer,
            scheduler, RNG and data position.
        attention_type: retention, linear or gated (new models only).
        hidden_size: model width (new models only).
        num_layers: decoder layers (new models only).
        num_heads: attention heads (new models only).
        intermediate_size: feed-forward width (new models only).
        num_topics: topic embedding rows incl. row 0 = unknown (new models only).
        num_contexts: context embedding rows incl. row 0 = unknown (new models only).
        dropout: dropout on embeddings and residual branches (new models only).
        vocab_size: tokenizer vocabulary when one is trained here.
        max_length: tokens per training sequence; longer entries are split, never dropped.
        pack: pack several entries per sequence (per-token topic/context ids).
        batch_size: sequences per device per step.
        grad_accum: gradient accumulation steps.
        learning_rate: peak AdamW learning rate (cosine schedule).
        epochs: passes over the training data (ignored when max_steps > 0).
        max_steps: total optimizer steps (-1: use epochs).
        warmup_ratio: share of steps for linear warm-up.
        weight_decay: AdamW weight decay.
        eval_steps: evaluate every N steps.
        save_steps: checkpoint every N steps.
        save_total_limit: keep at most this many checkpoints.
        logging_steps: log every N steps.
        validation_fraction: share of entries held out (split by entry, deterministic).
        on_overflow: 'unknown' maps topics/contexts beyond the embedding rows to id 0 (with a warning);
            'error' stops instead.
        seed: random seed (data order, init, dropout).
        threads: torch CPU threads (0 = torch's default, one per core; 1 on a busy machine: see benchmarks/README.md).
        bf16: bf16 autocast (state and decays stay fp32).
        tensorboard: also log to TensorBoard (under OUTPUT/runs).
        gradient_checkpointing: trade compute for memory.
        keep_best: save the weights with the lowest validation loss (OUTPUT/best) and make them the final
            model; a small corpus overfits long before the last step.
    """
    arguments = dict(locals())
    from .app import train_job

    train_job(**arguments)


def eval(  # noqa: A001  (the verb is called eval)
    model: str = "runs/ringan/model",
    data: list[str] | None = None,
    batch_size: int = 8,
    max_length: int = 1024,
    json_output: str | None = None,
    threads: int = 0,
) -> None:
    """Perplexity and bits per byte of a checkpoint on dialogue files, overall and per speaker.

    Args:
        model: a saved model folder (with its tokenizer).
        data: dialogue files or folders (default: the shipped corpus).
        batch_size: sequences per forward pass.
        max_length: tokens per sequence window.
        json_output: also write the results to this JSON file.
        threads: torch CPU threads (0 = torch's default, one per core; 1 on a busy machine: see benchmarks/README.md).
    """
    from .app import eval_job

    eval_job(model, data, batch_size, max_length, json_output, threads)


def generate(
    model: str = "runs/ringan/model",
    topic: str | None = None,
    context: str | None = None,
    turn: list[str] | None = None,
    speaker: str | None = None,
    speakers: list[str] | None = None,
    num_turns: int = 1,
    max_new_tokens: int = 120,
    temperature: float = 0.8,
    top_k: int = 50,
    top_p: float = 0.95,
    repetition_penalty: float = 1.1,
    greedy: bool = False,
    seed: int = 0,
    stream: bool = True,
    threads: int = 0,
) -> None:
    """Continue a dialogue for a Topik and Konteks: each reply stops at the end of the speaker's turn.

    Args:
        model: a saved model folder.
        topic: the Topik, by name (see config.topic_names) or id; default: the first known topic.
        context: the Konteks paragraph (a known one also selects its context id); default: the topic's.
        turn: opening turns, each as 'Name: text' (repeatable).
        speaker: who speaks next (default: the other of the last two speakers, or the second of --speakers).
        speakers: two names to alternate when generating several turns.
        num_turns: how many turns to generate.
        max_new_tokens: at most this many tokens per turn.
        temperature: sampling temperature.
        top_k: sample from the k most likely tokens.
        top_p: nucleus sampling threshold.
        repetition_penalty: >1 discourages repeating tokens.
        greedy: greedy decoding instead of sampling.
        seed: random seed for sampling.
        stream: print tokens as they are generated.
        threads: torch CPU threads (0 = torch's default, one per core; 1 on a busy machine: see benchmarks/README.md).
    """
    arguments = dict(locals())
    from .app import generate_job

    generate_job(**arguments)


def chat(
    model: str = "runs/ringan/model",
    topic: str | None = None,
    context: str | None = None,
    user: str = "Kamu",
    bot: str = "Ringan",
    session: str | None = None,
    max_new_tokens: int = 120,
    temperature: float = 0.8,
    top_k: int = 50,
    top_p: float = 0.95,
    repetition_penalty: float = 1.1,
    greedy: bool = False,
    seed: int = 0,
    threads: int = 0,
) -> None:
    """Chat: you play one speaker, the model the other. Each reply costs only its new tokens (the
    conversation lives in the fixed-size recurrent state). Type /quit to stop.

    Args:
        model: a saved model folder.
        topic: the Topik, by name or id.
        context: the Konteks paragraph.
        user: your speaker name.
        bot: the model's speaker name.
        session: a session file (safetensors): resumed if it exists, saved after every reply.
        max_new_tokens: at most this many tokens per reply.
        temperature: sampling temperature.
        top_k: sample from the k most likely tokens.
        top_p: nucleus sampling threshold.
        repetition_penalty: >1 discourages repeating tokens.
        greedy: greedy decoding instead of sampling.
        seed: random seed for sampling.
        threads: torch CPU threads (0 = torch's default, one per core; 1 on a busy machine: see benchmarks/README.md).
    """
    arguments = dict(locals())
    from .app import chat_job

    chat_job(**arguments)


def push(
    model: str = "runs/ringan/model",
    repo_id: str = "",
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload Ringan model",
) -> None:
    """Publish a saved model folder to the Hugging Face Hub (weights, modeling files, tokenizer, model card).

    Args:
        model: a saved model folder.
        repo_id: the Hub repository, e.g. 'user/ringan-dialog'.
        private: create the repository as private.
        token: a Hub token (default: the logged-in one).
        commit_message: the commit message.
    """
    from .app import push_job

    push_job(model, repo_id, private, token, commit_message)


def quantize(model: str = "runs/ringan/model", output: str = "", bits: int = 8, group_size: int = 32) -> None:
    """Weight-only int8 or int4 quantization (embeddings and LM head included); loads with from_pretrained.

    Args:
        model: a saved model folder.
        output: folder for the quantized model (default: MODEL-int{bits}).
        bits: 8 or 4.
        group_size: weights per scale (default: one scale per row for int8, 32 for int4; 0 = per row).
    """
    from .app import quantize_job

    quantize_job(model, output, bits, group_size)


def export(
    format: str = "onnx",  # noqa: A002
    model: str = "runs/ringan/model",
    output: str = "",
    quantize: str | None = None,
) -> None:
    """Export a model: ONNX prefill and decode graphs (state as explicit inputs/outputs).

    Args:
        format: only 'onnx'.
        model: a saved model folder.
        output: output folder (default: MODEL-onnx).
        quantize: None, 'int8' or 'int4'.
    """
    from .app import export_job

    export_job(format, model, output, quantize)


def convert(source: str = "seed", checkpoint: str = "", output: str = "", tokenizer: str | None = None) -> None:
    """Import a checkpoint of the founding document's MyGenerativeModel as a Ringan warm start.

    Args:
        source: only 'seed'.
        checkpoint: a state_dict file (.pt/.bin via torch.load(weights_only=True), or .safetensors).
        output: folder for the Ringan checkpoint.
        tokenizer: a tokenizer folder to save beside it.
    """
    from .app import convert_job

    convert_job(source, checkpoint, output, tokenizer)


def quickstart(
    output: str = "runs/quickstart",
    minutes: float = 3.0,
    topic: str | None = None,
    seed: int = 42,
) -> None:
    """The whole job on the shipped corpus: tokenizer, training, evaluation, a generated dialogue, and a
    reload of the saved model through AutoModelForCausalLM in a fresh process.

    Args:
        output: run folder.
        minutes: training time budget (the step count is sized from a short speed probe).
        topic: the Topik of the generated dialogue (default: one held out from training).
        seed: random seed.
    """
    from .app import quickstart_job

    quickstart_job(output, minutes, topic, seed)


VERBS: dict[str, Callable] = {
    "tokenizer": tokenizer,
    "train": train,
    "eval": eval,
    "generate": generate,
    "chat": chat,
    "push": push,
    "quantize": quantize,
    "export": export,
    "convert": convert,
    "quickstart": quickstart,
}


# ------------------------------------------------------------------------------------- argument parsing


def _arg_help(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its description and per-argument help."""
    doc = inspect.cleandoc(doc or "")
    description, _, args_part = doc.partition("\nArgs:\n")
    helps: dict[str, str] = {}
    current = None
    for line in args_part.splitlines():
        match = re.match(r"^\s{4}(\w+):\s*(.*)$", line)
        if match:
            current = match[1]
            helps[current] = match[2]
        elif current and line.strip():
            helps[current] += " " + line.strip()
    return description.strip(), helps


def _base_type(annotation) -> tuple[type, bool]:
    """(element type, is_list) of an annotation such as `int`, `str | None` or `list[str] | None`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringan",
        description="Ringan: train, evaluate, generate with, chat with, quantize, export and publish small "
        "long-context dialogue models on the Hugging Face stack.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, fn in VERBS.items():
        description, helps = _arg_help(fn.__doc__)
        verb = sub.add_parser(
            name,
            help=description.split("\n\n")[0].replace("\n", " "),
            description=description,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        verb.add_argument("--config", help="YAML or JSON file of defaults for this verb", default=None)
        hints = typing.get_type_hints(fn)
        for param in inspect.signature(fn).parameters.values():
            kind, is_list = _base_type(hints[param.name])
            flag = "--" + param.name.replace("_", "-")
            help_text = helps.get(param.name, "")
            if kind is bool:
                verb.add_argument(
                    flag, dest=param.name, action=argparse.BooleanOptionalAction, default=param.default, help=help_text
                )
            elif is_list:
                verb.add_argument(
                    flag, dest=param.name, type=kind, nargs="+", action="extend", default=None, help=help_text
                )
            else:
                verb.add_argument(flag, dest=param.name, type=kind, default=param.default, help=help_text)
    return parser


def _load_config(path: str, fn: Callable) -> dict:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{path}: config file not found")
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as err:  # noqa: BLE001  (any parse error becomes one line)
        raise UserError(f"{path}: cannot parse config ({err})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of option names to values")
    values = {k.replace("-", "_"): v for k, v in values.items()}
    known = set(inspect.signature(fn).parameters)
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return values


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return 0
    verb = args.verb
    fn = VERBS[verb]
    values = dict(vars(args))
    values.pop("verb")
    config_path = values.pop("config")
    try:
        if config_path:
            explicit = {a.lstrip("-").split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}
            explicit |= {a[3:] for a in explicit if a.startswith("no_")}
            for key, value in _load_config(config_path, fn).items():
                if key not in explicit:
                    values[key] = value
        fn(**values)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (
        UserError,
        DialogueFormatError,
        FileNotFoundError,
        NotADirectoryError,
        PermissionError,
        ValueError,
        OSError,
    ) as err:
        if os.environ.get("RINGAN_DEBUG"):
            raise
        print(f"ringan {verb}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # `python -m ringan.cli`: run the package's copy so its exception classes match
    from ringan.cli import main as package_main

    sys.exit(package_main())
