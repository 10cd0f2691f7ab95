"""The dialogue data format of the founding document: read, validate, write, and turn into datasets.

One file holds entries one after another::

    ==== Topik: <title> ====

    Konteks: <one paragraph, on one line>

    <Speaker>: <utterance, on one line>

    <Speaker>: <utterance, on one line>

Parts are separated by one or more blank lines. Tolerated (and tested): a UTF-8 BOM, Windows (CRLF) or old
Mac (CR) line endings, and any number of blank lines between parts. Every line is normalised first: white
space (the no-break space included) and invisible format characters (zero-width space, zero-width (non-)joiner,
word joiner, BOM) at either end are removed, so an invisible character before `====` or a name changes nothing.
A line that follows a Konteks or an utterance with no blank line between is an error, never a new speaker: it is
taken for that Konteks or utterance wrapped onto a second line (`Tentang B: ...` in a wrapped persona would
otherwise read as a turn of "Tentang B"). Everything else is an error naming the file, the line and what was
expected (`DialogueFormatError`, quoting at most 200 characters of the line); nothing is silently dropped.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .files import regular_file
from .labels import UNKNOWN, LabelVocab  # noqa: F401  (their old place: callers import them from here)

HEADER_PREFIX = "===="
_HEADER = re.compile(r"^====\s*Topik:(?P<topic>.*?)====$")
_TURN = re.compile(r"^(?P<speaker>[^\s:][^:]{0,39}?)\s*:(?:\s(?P<text>.*))?$")
RESERVED_SPEAKERS = ("Konteks", "Topik")
# invisible format characters: zero-width space, zero-width non-joiner and joiner, word joiner, BOM
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
# every character `str.isspace()` (and the `\s` of `re`) calls white space, spelt out: `str.strip` with a fixed set
# is linear, where a regex anchored at the end (`[\s...]+$`) is quadratic in a long run of inner spaces
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
_EDGE_CHARS = WHITESPACE + INVISIBLE
# control characters (NUL and the like) have no place in dialogue text; a tab is white space
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_QUOTE = 200
# sizes that keep memory bounded: a Topik or Konteks becomes the model's conditioning input in one piece
MAX_TOPIC = 200
MAX_CONTEXT = 5000
MAX_PROMPT_LINE = 1_000_000  # one conversation's line in a `generate --prompts` file


def normalise(text: str) -> str:
    """`text` without white space or invisible format characters at either end (linear in its length)."""
    return text.strip(_EDGE_CHARS)


def quote(text: str, limit: int = MAX_QUOTE) -> str:
    """`repr(text)`, cut to about `limit` characters: how an error message shows a user's line."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


class DialogueFormatError(ValueError):
    """A dialogue file does not follow the format; `str()` is `file:line: what was expected`."""

    def __init__(self, source: str, line: int, message: str):
        self.source, self.line, self.message = source, line, message
        super().__init__(f"{source}:{line}: {message}")


def _check_text(value: str, what: str, limit: int | None = None) -> None:
    if not isinstance(value, str) or not value or value != normalise(value):
        shown = quote(value) if isinstance(value, str) else repr(type(value).__name__)
        raise ValueError(
            f"{what} must be a non-empty string without surrounding white space or invisible characters, got {shown}"
        )
    if "\n" in value or "\r" in value:
        raise ValueError(f"{what} must be on one line, got {quote(value)}")
    if control := _CONTROL.search(value):
        raise ValueError(f"{what} holds the control character U+{ord(control.group()):04X}: {quote(value)}")
    if limit is not None and len(value) > limit:
        raise ValueError(f"{what} has {len(value):,} characters, at most {limit:,}: {quote(value)}")


def _check_topic(topic: str) -> None:
    if topic.endswith("=") or "====" in topic:
        raise ValueError(f"topic must not contain '====' or end with '=': {quote(topic)}")


def check_label(value: str, what: str) -> str:
    """A Topik or Konteks given outside a data file (a flag, a prompts file), checked by the rules of the format
    (one line, no control characters, at most `MAX_TOPIC`/`MAX_CONTEXT` characters, a Topik that cannot forge a
    header) and returned with its white space folded. `what` is "topic" or "context"; raises `ValueError`."""
    if not isinstance(value, str) or "\n" in value or "\r" in value:  # before folding: it would forge a line
        raise ValueError(f"{what} must be one line of text, got {quote(value) if isinstance(value, str) else value!r}")
    folded = normalise(" ".join(value.split()))
    _check_text(folded, what, MAX_TOPIC if what == "topic" else MAX_CONTEXT)
    if what == "topic":
        _check_topic(folded)
    return folded


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str

    def __post_init__(self) -> None:
        _check_text(self.speaker, "speaker")
        _check_text(self.text, "utterance")
        if any(c in INVISIBLE for c in self.speaker):  # it would print like another speaker's name
            raise ValueError(
                f"speaker name holds an invisible character (zero-width space, ...): {quote(self.speaker)}"
            )
        if (
            ":" in self.speaker
            or len(self.speaker) > 40
            or self.speaker in RESERVED_SPEAKERS
            or self.speaker.startswith(HEADER_PREFIX)  # its line would read as a topic header
        ):
            raise ValueError(
                "speaker name must have no ':', at most 40 characters, not be Konteks/Topik, not start with '====': "
                + quote(self.speaker)
            )


@dataclass(frozen=True)
class Entry:
    topic: str
    context: str
    turns: tuple[Turn, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        _check_text(self.topic, "topic", MAX_TOPIC)
        _check_text(self.context, "context", MAX_CONTEXT)
        _check_topic(self.topic)
        object.__setattr__(self, "turns", tuple(self.turns))
        if not self.turns:
            raise ValueError(f"entry {quote(self.topic)} has no turns")

    @property
    def speakers(self) -> list[str]:
        return list(dict.fromkeys(t.speaker for t in self.turns))


# --------------------------------------------------------------------------------------------- parsing


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[: err.start]
        line = before.replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1  # as parse() counts lines
        column = err.start - (max(before.rfind(b"\n"), before.rfind(b"\r")) + 1) + 1
        raise DialogueFormatError(
            source, line, f"not valid UTF-8 (byte 0x{data[err.start]:02x} at column {column}); save the file as UTF-8"
        ) from None


def parse(text: str, source: str = "<string>") -> list[Entry]:
    """Parse the text of a dialogue file into entries; raise `DialogueFormatError` on the first problem."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    entries: list[Entry] = []
    topic = context = None
    header_line = 0
    turns: list[Turn] = []
    previous = None  # (line number, "Konteks" or "utterance") of a content line not yet closed by a blank line

    def finish() -> None:
        if topic is None:
            return
        if context is None:
            raise DialogueFormatError(source, header_line, f"entry {quote(topic)} has no 'Konteks: <paragraph>' line")
        if not turns:
            raise DialogueFormatError(source, header_line, f"entry {quote(topic)} has no dialogue turns ('Name: text')")
        try:
            entries.append(Entry(topic, context, tuple(turns)))
        except ValueError as err:
            raise DialogueFormatError(source, header_line, str(err)) from None

    for number, raw in enumerate(text.split("\n"), start=1):
        line = normalise(raw)
        if not line:
            previous = None
            continue
        if control := _CONTROL.search(line):
            where = f"U+{ord(control.group()):04X} at column {raw.index(control.group()) + 1}"
            raise DialogueFormatError(source, number, f"control character {where}: dialogue text holds none")
        if line.startswith(HEADER_PREFIX):
            match = _HEADER.match(line)
            if match is None:
                if not line.endswith("===="):
                    raise DialogueFormatError(
                        source, number, "header is not closed: expected '==== Topik: <title> ===='"
                    )
                raise DialogueFormatError(source, number, "expected '==== Topik: <title> ===='")
            finish()
            topic, context, turns, header_line, previous = normalise(match["topic"]), None, [], number, None
            if not topic:
                raise DialogueFormatError(source, number, "empty topic: expected '==== Topik: <title> ===='")
            continue
        if topic is None:
            raise DialogueFormatError(
                source, number, "text before the first entry: expected '==== Topik: <title> ===='"
            )
        if previous is not None:
            raise DialogueFormatError(
                source,
                number,
                f"this line follows the {previous[1]} on line {previous[0]} with no blank line between: a Konteks or "
                f"an utterance must be on one line (join the two lines), and parts are separated by a blank line; "
                f"got {quote(line)}",
            )
        if context is None:
            if not line.startswith("Konteks:"):
                raise DialogueFormatError(source, number, "expected 'Konteks: <paragraph>' after the topic header")
            context = normalise(line[len("Konteks:") :])
            if not context:
                raise DialogueFormatError(source, number, "empty Konteks: expected 'Konteks: <paragraph>'")
            previous = (number, "Konteks")
            continue
        match = _TURN.match(line)
        if match is None or normalise(match["speaker"]) in RESERVED_SPEAKERS:
            raise DialogueFormatError(source, number, f"expected a turn 'Name: utterance', got {quote(line)}")
        speaker, utterance = normalise(match["speaker"]), normalise(match["text"] or "")
        if not utterance:
            raise DialogueFormatError(source, number, f"empty utterance after {quote(speaker + ':')}")
        try:
            turns.append(Turn(speaker, utterance))
        except ValueError as err:
            raise DialogueFormatError(source, number, str(err)) from None
        previous = (number, "utterance")
    finish()
    return entries


def read_dialogues(paths: str | Path | Iterable[str | Path]) -> list[Entry]:
    """Read one or more dialogue files (a folder means its `*.txt` files, sorted)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    entries: list[Entry] = []
    for path in map(Path, paths):
        files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
        if path.is_dir() and not files:
            raise FileNotFoundError(f"{path}: folder has no .txt dialogue files")
        for file in files:
            if file.exists():  # a FIFO or /dev/zero would block or fill memory
                regular_file(file, "dialogue file")
            try:
                data = file.read_bytes()
            except FileNotFoundError:
                raise FileNotFoundError(f"{file}: no such dialogue file") from None
            except OSError as err:
                raise OSError(f"{file}: cannot read ({err.strerror})") from None
            found = parse(_decode(data, str(file)), str(file))
            if not found:
                raise DialogueFormatError(str(file), 1, "no entries: expected '==== Topik: <title> ===='")
            entries.extend(found)
    return entries


def render_dialogue(
    topic: str | None, context: str | None, turns: Iterable[Turn] = (), next_speaker: str | None = None
) -> str:
    """The text layout the model reads, written in this one place: the data files, the generation prompt and the
    chat session render through it, and the tokenizer's chat template reproduces it (a test holds them equal).

    `==== Topik: {topic} ====`, `Konteks: {context}` and one `{speaker}: {text}` per turn, each followed by a blank
    line; then, with `next_speaker`, the generation prompt `{next_speaker}:` (no trailing space: the reply's
    first token carries it). A part given as `None` is left out, like the chat template's conversation without a
    topic, or a chat session's later pieces (turns only).
    """
    parts = [f"==== Topik: {topic} ====\n\n"] if topic else []
    if context is not None:
        parts.append(f"Konteks: {context}\n\n")
    parts += [f"{turn.speaker}: {turn.text}\n\n" for turn in turns]
    if next_speaker is not None:
        parts.append(f"{next_speaker}:")
    return "".join(parts)


def render_entry(entry: Entry) -> str:
    """The text of one entry, as it stands in a dialogue file and as the model is trained on it."""
    return render_dialogue(entry.topic, entry.context, entry.turns)


def clean_reply(text: str) -> str:
    """A generated utterance as the format holds it: its first line (an utterance is one line), whitespace folded."""
    return " ".join(text.strip().split("\n")[0].split())


def render(entries: Iterable[Entry]) -> str:
    """The text of a dialogue file: entries separated by two blank lines."""
    return "\n".join(render_entry(e) for e in entries)


def write_dialogues(path: str | Path, entries: Iterable[Entry]) -> None:
    Path(path).write_text(render(entries), encoding="utf-8")


def default_corpus_path() -> Path:
    """The corpus that ships with the package (45 original entries across the founding document's themes)."""
    return Path(__file__).parent / "corpus"


def load_default_corpus() -> list[Entry]:
    return read_dialogues(default_corpus_path())


# -------------------------------------------------------------------------------------------- datasets


def split_entries(
    entries: Sequence[Entry], validation_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Entry], list[Entry]]:
    """Deterministic train/validation split by entry (a seeded shuffle of the entry order)."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    order = list(range(len(entries)))
    random.Random(seed).shuffle(order)
    n_val = math.ceil(len(entries) * validation_fraction) if validation_fraction > 0 and len(entries) > 1 else 0
    val = set(order[:n_val])
    return [e for i, e in enumerate(entries) if i not in val], [e for i, e in enumerate(entries) if i in val]


def entries_to_records(entries: Iterable[Entry]) -> list[dict]:
    return [
        {
            "topic": e.topic,
            "context": e.context,
            "speakers": [t.speaker for t in e.turns],
            "utterances": [t.text for t in e.turns],
            "text": render_entry(e),
        }
        for e in entries
    ]


def build_dataset(paths: str | Path | Iterable[str | Path], validation_fraction: float = 0.1, seed: int = 0):
    """A `datasets.DatasetDict` with `train` and `validation` splits (split by entry, deterministic)."""
    from datasets import Dataset, DatasetDict, Features, List, Value

    # explicit features: an empty split (validation_fraction=0, one entry) still has the columns
    features = Features(
        topic=Value("string"),
        context=Value("string"),
        speakers=List(Value("string")),
        utterances=List(Value("string")),
        text=Value("string"),
    )

    def to_dataset(entries: list[Entry]) -> Dataset:
        records = entries_to_records(entries)
        return Dataset.from_dict({name: [r[name] for r in records] for name in features}, features=features)

    train, val = split_entries(read_dialogues(paths), validation_fraction, seed)
    return DatasetDict(train=to_dataset(train), validation=to_dataset(val))


def split_text(lines: Sequence[str], validation_fraction: float) -> tuple[list[str], list[str]]:
    """Hold out the LAST `validation_fraction` of a text file's characters (whole lines; blank lines dropped).

    By characters, not lines: files are often ordered by source (long paragraphs first, short sentences last),
    so the last share of the lines can hold far less than that share of the text.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    lines = [line.strip() for line in lines if line.strip()]
    total = sum(len(line) for line in lines)
    cut, held = len(lines), 0
    while cut > 0 and validation_fraction > 0 and held < validation_fraction * total:
        cut -= 1
        held += len(lines[cut])
    return lines[:cut], lines[cut:]


def records_to_entries(records: Iterable[dict]) -> list[Entry]:
    """Inverse of `entries_to_records` (e.g. rows of a `datasets.Dataset` loaded from the Hub)."""
    return [
        Entry(r["topic"], r["context"], tuple(Turn(s, t) for s, t in zip(r["speakers"], r["utterances"], strict=True)))
        for r in records
    ]


def corpus_statistics(entries: Sequence[Entry]) -> dict:
    turns = [t for e in entries for t in e.turns]
    return {
        "entries": len(entries),
        "topics": len({e.topic for e in entries}),
        "contexts": len({e.context for e in entries}),
        "turns": len(turns),
        "speakers": len({t.speaker for t in turns}),
        "characters": sum(len(render_entry(e)) for e in entries),
    }
