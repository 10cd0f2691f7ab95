"""What several verbs share: their common options, the thread count, input paths, the model a verb reads, and
topic/Konteks lookup. Loading and checking a saved model is `ringan.loading`'s."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ..data import UNKNOWN, default_corpus_path
from ..defaults import DEFAULT_CONTEXT, DEFAULT_TOPIC
from ..errors import OptionError, UserError
from ..options import option

RUNS, MODEL_DIR = "runs", "model"  # where verbs look for a model when --model is not given


def data_option():
    """The `--data` field of the verbs that read dialogue files."""
    from ..data import MAX_CONTEXT, MAX_TOPIC

    return option(
        None,
        f"dialogue files or folders (a Topik at most {MAX_TOPIC} characters, a Konteks at most {MAX_CONTEXT})",
        default_text="the corpus shipped with ringan",
    )


def model_option(what: str = "a saved model folder, or 'base' (Ringan-base, shipped with the package)"):
    """The `--model` field of the verbs that read a saved model."""
    return option(None, what, default_text=f"the most recently trained {RUNS}/*/{MODEL_DIR}")


def threads_option():
    """The `--threads` field every verb that runs the model has."""
    return option(
        0,
        "torch CPU threads (0 = one per core, as torch picks; 1 on a busy machine: see benchmarks/README.md)",
        minimum=0,
        maximum=1024,
    )


def set_threads(threads: int) -> int:
    """Use `threads` torch threads (0 = torch's default). Returns the count in use."""
    import torch

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


def model_folder(model: str | None) -> Path:
    """The model folder a verb reads: `model`, or (when none is given) the most recently trained `runs/*/model`
    under the current folder, where `ringan train` and `ringan quickstart` save theirs."""
    if model is not None:
        from ..base_model import BASE_NAME, resolve_model_name

        try:
            return resolve_model_name(model)
        except FileNotFoundError as err:
            raise UserError(f"--model {BASE_NAME}: {err}") from None
    found = sorted(
        (p for p in Path(RUNS).glob(f"*/{MODEL_DIR}") if (p / "config.json").is_file()),
        key=lambda p: (p / "config.json").stat().st_mtime,
    )
    if not found:
        raise UserError(
            f"no trained model under {Path(RUNS).resolve()}/*/{MODEL_DIR} (`ringan train` saves to runs/ringan/model, "
            "`ringan quickstart` to runs/quickstart/model): pass --model FOLDER"
        )
    print(f"(using {found[-1]}, the most recently trained model under {RUNS}/; --model picks another)", file=sys.stderr)
    return found[-1]


def init_folder(init_from: str | None) -> Path | None:
    """The model folder `ringan train --init-from` names: `base` (the shipped base), a folder, or None for
    `none` (a new model)."""
    if init_from in (None, "", "none"):
        return None
    from ..base_model import BASE_NAME, resolve_model_name

    try:
        return resolve_model_name(init_from)
    except FileNotFoundError as err:
        raise UserError(f"--init-from {BASE_NAME}: {err}; pass --init-from none to train a new model") from None


def resolve_topic(config, topic: str | None) -> tuple[int, str]:
    """`(id, name)` of a topic given by name or id; the model's first topic when `topic` is None (for a
    text-conditioned model that knows none, `DEFAULT_TOPIC`)."""
    names = config.topic_names or [UNKNOWN]
    if topic is None:
        if len(names) < 2:
            if getattr(config, "conditioning", "ids") == "text":
                print(f"(no --topic: talking about {DEFAULT_TOPIC!r}; pass --topic and --context)", file=sys.stderr)
                return 0, DEFAULT_TOPIC
            raise UserError("this model knows no topics: pass --topic")
        return 1, names[1]
    topic = _label(topic, "topic")
    if topic.isdigit():
        index = int(topic)
        if not 0 <= index < len(names):
            raise UserError(f"topic id {index} is out of range: the model knows ids 0..{len(names) - 1}")
        return index, names[index]
    if topic in names:
        return names.index(topic), topic
    if getattr(config, "conditioning", "ids") == "text":  # any Topik: its vector comes from its text
        return 0, topic
    known = "; ".join(f"{i}: {n}" for i, n in enumerate(names) if i)
    raise UserError(f"unknown topic {topic!r}. Known topics: {known}")


def resolve_context(model_dir: str | Path, config, topic: str, context: str | None) -> tuple[int, str]:
    """`(id, text)` of a Konteks (id 0 when the model does not know it); the topic's own when `context` is None."""
    from ..loading import TOPIC_CONTEXTS_FILE, read_json

    names = config.context_names or [UNKNOWN]
    if context is None:
        mapping_file = Path(model_dir) / TOPIC_CONTEXTS_FILE
        mapping = read_json(mapping_file, TOPIC_CONTEXTS_FILE) if mapping_file.is_file() else {}
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise UserError(f"{mapping_file}: expected a JSON object of topic -> Konteks text")
        if topic == DEFAULT_TOPIC and topic not in mapping:
            mapping[topic] = DEFAULT_CONTEXT
        if topic not in mapping or not mapping[topic].strip():
            known = "; ".join(sorted(t for t, text in mapping.items() if text.strip())) or "none"
            raise UserError(f"no Konteks is known for topic {topic!r}: pass --context (topics with a Konteks: {known})")
        context = " ".join(mapping[topic].split())
    else:
        context = _label(context, "context")
    return (names.index(context) if context in names else 0), context


def _label(value: str, what: str) -> str:
    """A --topic or --context value by the data format's rules (`data.check_label`), or an `OptionError`."""
    from ..data import MAX_CONTEXT, MAX_TOPIC, check_label

    try:
        return check_label(value, what)
    except ValueError as err:
        limit = MAX_TOPIC if what == "topic" else MAX_CONTEXT
        raise OptionError(f"--{what}", f"one line of at most {limit} characters ({err})") from None


def require_extra(extra: str, modules: tuple[str, ...]) -> None:
    """Stop with the install command when an optional dependency is missing."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise UserError(f"{name} is not installed: pip install 'ringan[{extra}]'") from None
