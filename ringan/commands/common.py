"""What several verbs share: the thread count, input paths, loading a saved model, and topic/Konteks lookup."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data import UNKNOWN, default_corpus_path
from ..errors import UserError
from ..options import option

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
TOPIC_CONTEXTS_FILE = "topic_contexts.json"  # topic -> a Konteks seen with it, for prompts that give no Konteks
DEFAULT_MODEL = "runs/ringan/model"


def data_option():
    """The `--data` field of the verbs that read dialogue files."""
    return option(None, "dialogue files or folders", default_text="the corpus shipped with ringan")


def threads_option():
    """The `--threads` field every verb that runs the model has."""
    return option(
        0,
        "torch CPU threads (0 = one per core, as torch picks; 1 on a busy machine: see benchmarks/README.md)",
        minimum=0,
    )


def set_threads(threads: int) -> int:
    """Use `threads` torch threads (0 = torch's default). Returns the count in use."""
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def data_paths(data: Sequence[str] | None) -> list[Path]:
    """The dialogue files or folders to read (the shipped corpus when none are given); each must exist."""
    paths = [Path(p) for p in data] if data else [default_corpus_path()]
    for p in paths:
        if not p.exists():
            raise UserError(f"{p}: no such dialogue file or folder")
    return paths


def read_text_lines(files: Sequence[str]) -> list[str]:
    """The lines of plain-text files, with the file and line of any byte that is not UTF-8."""
    lines: list[str] = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise UserError(f"{path}: no such text file")
        try:
            lines += path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            line = path.read_bytes()[: err.start].count(b"\n") + 1
            raise UserError(f"{path}:{line}: not valid UTF-8; save the file as UTF-8") from None
    return lines


def load_tokenizer(folder: str | Path):
    """A saved tokenizer, or a one-line error saying how to make one."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise UserError(f"{folder}: no tokenizer.json here (train one with `ringan tokenizer`)")
    return AutoTokenizer.from_pretrained(str(folder))


def load_model(folder: str | Path, for_training: bool = False):
    """A saved Ringan model and its tokenizer, with the checks a user needs when something is missing."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    import ringan  # noqa: F401  (registers the auto classes)

    hf_logging.disable_progress_bar()  # keep generated text and tables clean
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such model folder")
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{folder}: model folder is missing {', '.join(missing)} (was it saved by `ringan train`?)")
    tokenizer = load_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    if len(tokenizer) > model.config.vocab_size:
        raise UserError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
            f"{model.config.vocab_size}: they do not belong together"
        )
    model.train(for_training)
    return model, tokenizer


def resolve_topic(config, topic: str | None) -> tuple[int, str]:
    """`(id, name)` of a topic given by name or id; the model's first topic when `topic` is None."""
    names = config.topic_names or [UNKNOWN]
    if topic is None:
        if len(names) < 2:
            raise UserError("this model knows no topics: pass --topic")
        return 1, names[1]
    if topic.isdigit():
        index = int(topic)
        if not 0 <= index < len(names):
            raise UserError(f"topic id {index} is out of range: the model knows ids 0..{len(names) - 1}")
        return index, names[index]
    if topic in names:
        return names.index(topic), topic
    known = "; ".join(f"{i}: {n}" for i, n in enumerate(names) if i)
    raise UserError(f"unknown topic {topic!r}. Known topics: {known}")


def resolve_context(model_dir: str | Path, config, topic: str, context: str | None) -> tuple[int, str]:
    """`(id, text)` of a Konteks (id 0 when the model does not know it); the topic's own when `context` is None."""
    names = config.context_names or [UNKNOWN]
    if context is None:
        mapping_file = Path(model_dir) / TOPIC_CONTEXTS_FILE
        mapping = json.loads(mapping_file.read_text(encoding="utf-8")) if mapping_file.is_file() else {}
        if topic not in mapping:
            raise UserError(f"no Konteks is known for topic {topic!r}: pass --context")
        context = mapping[topic]
    context = " ".join(context.split())
    return (names.index(context) if context in names else 0), context
