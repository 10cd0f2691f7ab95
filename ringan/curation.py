"""Checks and statistics for a curated dialogue corpus: what a corpus must pass before it is trained on.

`check_corpus` reads dialogue files with the package's own parser and reports, per entry, what breaks the rules of
a curated corpus (`Problem`: file, line, message): entry and turn lengths, speakers, names missing from the Konteks,
register (`saya/Anda` outside an entry whose Konteks says a character speaks formally; `gue/lo`), stock turn
openings, repeated Topik and near-duplicate dialogues (MinHash over word 5-grams). `corpus_report` measures what a
data card states: distinct Topik and names, distinct-2 of turns, vocabulary, repeated 8-grams within the corpus
and against another corpus, the most frequent turn openings, lengths, and the split sizes.

The split is fixed by Topik (`split_of`): a hash of the normalised Topik, so an entry's split never changes when
entries are added, and a test Topik is never seen in training.

    python -m ringan.curation check corpus/            # problems, one line each; exit 1 if any
    python -m ringan.curation report corpus/ --json r.json
    python -m ringan.curation file drafts/ --into corpus/    # checked drafts -> corpus/{train,validation,test}/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .data import DialogueFormatError, Entry, _decode, parse

MIN_TURNS, MAX_TURNS = 8, 24
MIN_SPEAKERS, MAX_SPEAKERS = 2, 3
MIN_CONTEXT_WORDS, MAX_CONTEXT_WORDS = 25, 130
MAX_TURN_WORDS = 110
NEAR_DUPLICATE_JACCARD = 0.5
SPLITS = {"test": 5, "validation": 5}  # percent of Topik; the rest is train

_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*", re.UNICODE)
_FORMAL = re.compile(r"\b(saya|anda)\b", re.IGNORECASE)
_SLANG = re.compile(r"\b(gue|lo|lu|elo|elu)\b", re.IGNORECASE)  # not "gua": also a cave
# openings a tiny model would learn as the way every explanation starts (the corpus plan bans them)
STOCK_OPENINGS = (
    "pertanyaan bagus",
    "pertanyaan yang bagus",
    "nah, itu pertanyaan",
    "tepat sekali",
    "betul sekali",
    "gampangnya",
    "jadi gini",
    "wah, menarik",
    "hehe",
)


@dataclass(frozen=True)
class Problem:
    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Located:
    """An entry with the file and line of its header."""

    entry: Entry
    source: str
    line: int


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def normalised_topic(topic: str) -> str:
    """The Topik as compared and hashed: lower case, punctuation dropped, numbers kept ("Hukum Newton 1" and
    "Hukum Newton 2" are two Topik)."""
    return " ".join(re.findall(r"\w+", topic.lower()))


def split_of(topic: str) -> str:
    """`train`, `validation` or `test`: fixed by the Topik's hash, so it never moves as the corpus grows."""
    bucket = int(hashlib.sha256(normalised_topic(topic).encode()).hexdigest(), 16) % 100
    if bucket < SPLITS["test"]:
        return "test"
    if bucket < SPLITS["test"] + SPLITS["validation"]:
        return "validation"
    return "train"


def corpus_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.txt") if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


def read_located(paths: Iterable[str | Path]) -> list[Located]:
    """Entries of every `.txt` file under `paths` with their header lines; `DialogueFormatError` if one is malformed."""
    located: list[Located] = []
    for file in corpus_files(paths):
        text = _decode(file.read_bytes(), str(file))
        entries = parse(text, str(file))
        header_lines = [n for n, line in enumerate(text.splitlines(), start=1) if line.lstrip().startswith("====")]
        located += [Located(e, str(file), n) for e, n in zip(entries, header_lines, strict=True)]
    return located


def entry_problems(item: Located) -> list[str]:
    """What breaks the corpus rules inside one entry."""
    entry, found = item.entry, []
    turns, speakers = entry.turns, entry.speakers
    if not MIN_TURNS <= len(turns) <= MAX_TURNS:
        found.append(f"{len(turns)} turns: expected {MIN_TURNS}-{MAX_TURNS}")
    if not MIN_SPEAKERS <= len(speakers) <= MAX_SPEAKERS:
        found.append(f"{len(speakers)} speakers ({', '.join(speakers)}): expected {MIN_SPEAKERS}-{MAX_SPEAKERS}")
    counts = Counter(t.speaker for t in turns)
    for speaker in speakers:
        if counts[speaker] < 2:
            found.append(f"speaker {speaker!r} has {counts[speaker]} turn: every speaker speaks at least twice")
        if speaker.lower() not in entry.context.lower():
            found.append(f"speaker {speaker!r} is not named in the Konteks")
    context_words = len(words(entry.context))
    if not MIN_CONTEXT_WORDS <= context_words <= MAX_CONTEXT_WORDS:
        found.append(f"Konteks has {context_words} words: expected {MIN_CONTEXT_WORDS}-{MAX_CONTEXT_WORDS}")
    formal_allowed = "formal" in entry.context.lower()
    for index, turn in enumerate(turns, start=1):
        where = f"turn {index} ({turn.speaker})"
        if index > 1 and turns[index - 2].speaker == turn.speaker:
            found.append(f"{where}: the same speaker twice in a row")
        n = len(words(turn.text))
        if n > MAX_TURN_WORDS:
            found.append(f"{where}: {n} words, at most {MAX_TURN_WORDS}")
        if not formal_allowed and (match := _FORMAL.search(turn.text)):
            found.append(
                f"{where}: {match.group(0)!r} (aku/kamu register; formal speech needs 'formal' in the Konteks)"
            )
        if match := _SLANG.search(turn.text):
            found.append(f"{where}: {match.group(0)!r} (aku/kamu register, no gue/lo)")
        opening = turn.text.lower()
        for stock in STOCK_OPENINGS:
            if opening.startswith(stock):
                found.append(f"{where}: opens with the stock phrase {stock!r}")
    return found


# ------------------------------------------------------------------------------------------ duplicates


def _shingles(entry: Entry, n: int = 5) -> set[str]:
    tokens = [w for t in entry.turns for w in words(t.text)]
    return {" ".join(tokens[i : i + n]) for i in range(max(len(tokens) - n + 1, 1))}


def near_duplicates(
    entries: Sequence[Entry], threshold: float = NEAR_DUPLICATE_JACCARD
) -> list[tuple[int, int, float]]:
    """Pairs `(i, j, jaccard)` of entries whose dialogues share at least `threshold` of their word 5-grams.

    MinHash (64 permutations, 16 bands of 4) finds the candidates; each candidate's exact Jaccard decides.
    """
    import numpy as np

    shingle_sets = [_shingles(e) for e in entries]
    prime = (1 << 61) - 1
    rng = np.random.default_rng(0)
    # 32-bit shingle hashes and a < 2^29 keep a * x + b below 2^62: no uint64 overflow
    a = rng.integers(1, 1 << 29, size=64, dtype=np.uint64)
    b = rng.integers(0, prime, size=64, dtype=np.uint64)
    buckets: dict[tuple[int, bytes], list[int]] = {}
    for index, shingles in enumerate(shingle_sets):
        hashed = np.array(
            [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "little") for s in shingles],
            dtype=np.uint64,
        )
        signature = ((hashed[None, :] * a[:, None] + b[:, None]) % prime).min(axis=1)
        for band in range(16):
            buckets.setdefault((band, signature[band * 4 : band * 4 + 4].tobytes()), []).append(index)
    pairs: set[tuple[int, int]] = set()
    for members in buckets.values():
        for x, i in enumerate(members):
            for j in members[x + 1 :]:
                pairs.add((i, j))
    found = []
    for i, j in sorted(pairs):
        union = len(shingle_sets[i] | shingle_sets[j])
        jaccard = len(shingle_sets[i] & shingle_sets[j]) / union if union else 1.0
        if jaccard >= threshold:
            found.append((i, j, round(jaccard, 3)))
    return found


def split_folder_problem(item: Located) -> str | None:
    """An entry filed under a split folder (`train/`, `validation/`, `test/`) that its Topik does not belong to."""
    folder = Path(item.source).parent.name
    if folder in ("train", "validation", "test") and split_of(item.entry.topic) != folder:
        return f"filed under {folder}/ but its Topik belongs to {split_of(item.entry.topic)}/ (the split is by Topik)"
    return None


def check_corpus(paths: Iterable[str | Path]) -> tuple[list[Located], list[Problem]]:
    """Read and check a corpus: its entries and every problem found (empty when it passes)."""
    try:
        located = read_located(paths)
    except DialogueFormatError as err:
        return [], [Problem(err.source, err.line, err.message)]
    problems = [Problem(item.source, item.line, message) for item in located for message in entry_problems(item)]
    problems += [Problem(item.source, item.line, m) for item in located if (m := split_folder_problem(item))]
    first_seen: dict[str, Located] = {}
    for item in located:
        key = normalised_topic(item.entry.topic)
        if key in first_seen:
            other = first_seen[key]
            problems.append(Problem(item.source, item.line, f"Topik repeated (first at {other.source}:{other.line})"))
        else:
            first_seen[key] = item
    for i, j, jaccard in near_duplicates([item.entry for item in located]):
        other = located[i]
        problems.append(
            Problem(
                located[j].source,
                located[j].line,
                f"near-duplicate of {other.source}:{other.line} ({jaccard:.0%} of word 5-grams shared)",
            )
        )
    return located, problems


# ---------------------------------------------------------------------------------------------- report


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_share(entries: Sequence[Entry], against: Sequence[Entry] = (), n: int = 8) -> float:
    """Share of the `n`-grams in `entries` that also occur in another entry (or, given `against`, in those)."""
    per_entry = [set(_ngrams([w for t in e.turns for w in words(t.text)], n)) for e in entries]
    if against:
        other = {g for e in against for g in _ngrams([w for t in e.turns for w in words(t.text)], n)}
        hits = sum(len(grams & other) for grams in per_entry)
    else:
        seen = Counter(g for grams in per_entry for g in grams)
        hits = sum(1 for grams in per_entry for g in grams if seen[g] > 1)
    total = sum(len(grams) for grams in per_entry)
    return hits / total if total else 0.0


def corpus_report(entries: Sequence[Entry], reference: Sequence[Entry] = (), top: int = 15) -> dict:
    """The statistics a data card states about `entries` (`reference`: e.g. the bundled sample, for overlap)."""
    turns = [t for e in entries for t in e.turns]
    turn_words = [words(t.text) for t in turns]
    bigrams = [g for tokens in turn_words for g in _ngrams(tokens, 2)]
    openings = Counter(" ".join(tokens[:2]) for tokens in turn_words if tokens)
    first_openings = Counter(" ".join(words(e.turns[0].text)[:2]) for e in entries)
    closers = sum(
        1 for e in entries if re.search(r"\b(makasih|terima kasih|sama-sama)\b", e.turns[-1].text, re.IGNORECASE)
    )
    splits = Counter(split_of(e.topic) for e in entries)
    return {
        "entries": len(entries),
        "distinct_topik": len({normalised_topic(e.topic) for e in entries}),
        "distinct_names": len({t.speaker for t in turns}),
        "turns": len(turns),
        "turns_per_entry": {str(k): v for k, v in sorted(Counter(len(e.turns) for e in entries).items())},
        "speakers_per_entry": {str(k): v for k, v in sorted(Counter(len(e.speakers) for e in entries).items())},
        "words": sum(len(tokens) for tokens in turn_words),
        "vocabulary": len({w for tokens in turn_words for w in tokens}),
        "distinct_2_of_turns": round(len(set(bigrams)) / len(bigrams), 4) if bigrams else 0.0,
        "repeated_8gram_share_within": round(repeated_ngram_share(entries), 4),
        "repeated_8gram_share_vs_reference": round(repeated_ngram_share(entries, reference), 4) if reference else None,
        "share_ending_with_thanks": round(closers / len(entries), 4) if entries else 0.0,
        "top_turn_openings": openings.most_common(top),
        "top_first_turn_openings": first_openings.most_common(top),
        "splits": {name: splits.get(name, 0) for name in ("train", "validation", "test")},
    }


def file_by_split(paths: Iterable[str | Path], root: str | Path) -> dict[str, int]:
    """Move checked draft files into the corpus's split folders: each entry of `drafts/<slice>/<name>.txt` goes to
    `root/<split of its Topik>/<name>.txt` (appended after what that file holds), and the draft is removed.
    Returns how many entries went to each split. Refuses if the drafts do not pass `check_corpus`."""
    from .data import read_dialogues, render

    files = corpus_files(paths)
    located, problems = check_corpus(files)
    if problems:
        raise ValueError(f"{len(problems)} problems in the drafts, first: {problems[0]}")
    counts: Counter = Counter()
    for file in files:
        groups: dict[str, list[Entry]] = {}
        for item in (x for x in located if x.source == str(file)):
            groups.setdefault(split_of(item.entry.topic), []).append(item.entry)
        for split, entries in groups.items():
            target = Path(root) / split / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            before = read_dialogues(target) if target.exists() else []
            target.write_text(render([*before, *entries]), encoding="utf-8")
            counts[split] += len(entries)
        file.unlink()
    return dict(counts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringan.curation", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["check", "report", "file"])
    parser.add_argument("paths", nargs="+", help="dialogue files or folders (their .txt files, recursively)")
    parser.add_argument("--json", type=Path, help="report: also write the statistics to this JSON file")
    parser.add_argument("--into", type=Path, help="file: the corpus root holding train/, validation/, test/")
    args = parser.parse_args(argv)
    if args.action == "file":
        if args.into is None:
            parser.error("file: --into CORPUS_ROOT is required")
        try:
            print(file_by_split(args.paths, args.into))
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        return 0
    try:
        located, problems = check_corpus(args.paths)
    except (FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    if args.action == "report" and located:
        from .data import load_default_corpus

        report = corpus_report([item.entry for item in located], load_default_corpus())
        text = json.dumps(report, ensure_ascii=False, indent=1)
        print(text)
        if args.json:
            args.json.write_text(text + "\n", encoding="utf-8")
    print(f"{len(located)} entries, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
