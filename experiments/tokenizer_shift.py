"""Does the curated corpus shift chars/token enough to retrain the tokenizer? (issue: curated corpus, §2)

Compares the shipped base's tokenizer with one trained the same way (byte-level BPE, 10,000 tokens) on the same
training text plus the curated training split, on the curated validation split, XPersona held-out and held-out prose.
Reads `runs/base-data/` (`python experiments/base_data.py`) and writes `results/base/tokenizer_shift.json`.

    python experiments/tokenizer_shift.py
"""

from __future__ import annotations

import sys

import protocol as P

from ringan.data import read_dialogues, render_entry
from ringan.loading import read_tokenizer
from ringan.tokenization import train_tokenizer

DATA = P.REPO / "runs" / "base-data"
CORPUS = P.REPO / "corpus"


def chars_per_token(tok, texts: list[str]) -> float:
    tokens = sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])
    return sum(map(len, texts)) / tokens


def main() -> int:
    P.require_data()
    if not (DATA / "text-train.txt").is_file():
        print(f"skipping: {DATA} is missing (run experiments/base_data.py first)")
        return 0
    text = (DATA / "text-train.txt").read_text(encoding="utf-8").splitlines()
    dialogues = read_dialogues(DATA / "dialogues-train.txt")
    curated = read_dialogues(CORPUS / "train")
    held_out = {
        "curated validation": [render_entry(e) for e in read_dialogues(CORPUS / "validation")],
        "xpersona held-out": [render_entry(e) for e in read_dialogues(DATA / "heldout" / "xpersona.txt")],
        "prose held-out": [
            line for path in sorted((DATA / "heldout").iterdir()) if path.suffix == ".txt" and path.stem not in
            ("indosmd", "xpersona") for line in path.read_text(encoding="utf-8").splitlines()
        ],
    }  # fmt: skip
    base = read_tokenizer(P.REPO / "ringan" / "base")
    retrained = train_tokenizer(dialogues + curated, vocab_size=P.VOCAB_SIZE, extra_texts=text)
    report = {
        name: {"base": chars_per_token(base, texts), "retrained with curated": chars_per_token(retrained, texts)}
        for name, texts in held_out.items()
    }
    for name, row in report.items():
        change = row["retrained with curated"] / row["base"] - 1
        print(f"{name}: {row['base']:.3f} -> {row['retrained with curated']:.3f} chars/token ({change:+.1%})")
        row["change"] = change
    P.write_json(P.RESULTS / "base" / "tokenizer_shift.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
