"""Write the protocol's parts of `../shared/data` as files, so Ringan-base is trained by `ringan train` itself.

The recipe `recipes/ringan-base.yaml` reads what this writes (the training parts of every source) and the
experiments score the held-out parts, which are the protocol's (`protocol.load_splits`): the same held-out text
and dialogues that today's base was measured on.

    python experiments/base_data.py            # -> runs/base-data/ (then: ringan train --config recipes/ringan-base.yaml)

Files: `text-train.txt` (every text source's training lines), `dialogues-train.txt` (IndoSMD + XPersona training
entries), `heldout/<source>` (each text source's held-out lines), `heldout/indosmd.txt`, `heldout/xpersona.txt`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import protocol as P

from ringan.data import write_dialogues
from ringan.files import write_text_atomically

DEFAULT_OUTPUT = P.REPO / "runs" / "base-data"


def write_base_data(output: Path) -> dict[str, int]:
    """Write the files (each replaced atomically); returns lines or entries per file."""
    splits = P.load_splits()
    (output / "heldout").mkdir(parents=True, exist_ok=True)
    written = {}
    write_text_atomically(output / "text-train.txt", "\n".join(splits.text_train) + "\n", "the training text")
    written["text-train.txt"] = len(splits.text_train)
    dialogues = splits.smd_train + splits.xp_train
    write_dialogues(output / "dialogues-train.txt", dialogues)
    written["dialogues-train.txt"] = len(dialogues)
    for source, lines in splits.text_heldout.items():
        write_text_atomically(output / "heldout" / source, "\n".join(lines) + "\n", "held-out text")
        written[f"heldout/{source}"] = len(lines)
    for name, entries in (("indosmd", splits.smd_val), ("xpersona", splits.xp_val)):
        write_dialogues(output / "heldout" / f"{name}.txt", entries)
        written[f"heldout/{name}.txt"] = len(entries)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="folder to write (default: %(default)s)")
    args = parser.parse_args(argv)
    P.require_data()
    for name, count in write_base_data(args.output).items():
        print(f"{args.output / name}: {count:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
