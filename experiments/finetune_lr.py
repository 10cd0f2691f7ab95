"""The learning rate `ringan train --data my.txt` uses when it fine-tunes Ringan-base (the README's main command).

The quickstart's split of the bundled corpus (40 entries to train on, the same 5 held out as everywhere): every arm
runs `ringan train` with the README command's defaults (epochs, batch, length, its own 10% validation split, best
checkpoint kept) and one learning rate; the quickstart's fine-tune (fixed steps, no validation split) runs beside
them as the gain to match. Bits per byte on the 5 held-out entries.

    python experiments/finetune_lr.py                   # writes experiments/results/finetune_lr/sweep.json
    python experiments/finetune_lr.py --epochs 20 --rates 3e-4 1e-3 --no-quickstart   # sweep_epochs20.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ringan.base_model import base_model_path
from ringan.commands.evaluate import evaluate
from ringan.commands.train import train
from ringan.data import load_default_corpus, split_entries, write_dialogues

OUT = Path(__file__).parent / "results" / "finetune_lr"
RATES = (1e-4, 3e-4, 1e-3, 3e-3)


def held_out_bpb(model: Path, held_out: Path) -> float:
    return evaluate(model=str(model), data=[str(held_out)])["overall"]["bits_per_byte"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/finetune_lr"))
    parser.add_argument("--rates", type=float, nargs="+", default=RATES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=float, help="the README command with this many epochs instead of its default")
    parser.add_argument("--max-length", type=int, help="the README command with this --max-length")
    parser.add_argument("--no-quickstart", action="store_true", help="leave out the quickstart's arm")
    args = parser.parse_args()
    train_entries, held_entries = split_entries(load_default_corpus(), 0.1, 0)
    args.work.mkdir(parents=True, exist_ok=True)
    data, held_out = args.work / "train.txt", args.work / "held_out.txt"
    write_dialogues(data, train_entries)
    write_dialogues(held_out, held_entries)
    report = {"base": held_out_bpb(base_model_path(), held_out), "readme_command": {}}
    changed = {"epochs": args.epochs, "max_length": args.max_length}
    changed = {name: value for name, value in changed.items() if value}
    suffix = "".join(f"_{name}{value:g}" for name, value in changed.items())
    arms = {f"readme_lr{lr:g}{suffix}": dict(learning_rate=lr, **changed) for lr in args.rates}
    if not args.no_quickstart:  # the quickstart's own fine-tune, as the quickstart calls `ringan train`
        from ringan.commands.quickstart import QUICKSTART_STEPS
        from ringan.commands.train import FINE_TUNE_LEARNING_RATE

        arms["quickstart"] = dict(
            learning_rate=FINE_TUNE_LEARNING_RATE,
            validation_fraction=0.0,
            max_length=512,
            max_steps=QUICKSTART_STEPS,
            save_steps=QUICKSTART_STEPS,
        )
    for name, settings in arms.items():
        began = time.time()
        train(output=str(args.work / name), data=[str(data)], threads=args.threads, overwrite=True, **settings)
        seconds = time.time() - began
        bpb = held_out_bpb(args.work / name / "model", held_out)
        row = {**settings, "bits_per_byte": round(bpb, 4), "seconds": round(seconds, 1)}
        if name == "quickstart":
            report["quickstart"] = row
        else:
            report["readme_command"][name] = row
        print(f"{name}: held-out {bpb:.4f} bits/byte ({seconds:.0f} s)", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"sweep{suffix}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
