"""Before the long run: one or two torch threads, fp32 or bf16 autocast, for `ringan train` on this CPU (issue:
curated corpus, §2). Each arm runs the Ringan-base recipe for the same steps on the same data (a slice of its text,
the same tokenizer, seed 0) in its own process; the arms alternate, twice, so a machine whose speed drifts
affects them alike. Reports seconds per step and the training loss over the last steps (equal loss: bf16 must not
learn worse).

    python experiments/train_speed.py [--steps 40]     # after experiments/base_data.py; writes results/base/train_speed.json
    python experiments/train_speed.py --summarize      # the same file from the arms' run folders (stopped ones too)
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time

import protocol as P

RECIPE = P.REPO / "recipes" / "ringan-base.yaml"
WORK = P.REPO / "runs" / "train-speed"
ARMS = [(2, False), (1, False), (2, True), (1, True)]  # (threads, bf16)
TEXT_LINES = 20_000


def run_arm(threads: int, bf16: bool, steps: int, repeat: int) -> dict:
    output = WORK / f"t{threads}{'-bf16' if bf16 else ''}-{repeat}"
    args = [
        sys.executable, "-m", "ringan", "train", "--config", str(RECIPE), "--output", str(output), "--overwrite",
        "--text", str(WORK / "text.txt"), "--tokenizer", str(WORK / "tokenizer"), "--max-steps", str(steps),
        "--threads", str(threads), "--bf16" if bf16 else "--no-bf16", "--logging-steps", "1",
        "--eval-steps", "100000", "--save-steps", "100000", "--no-keep-best",
        "--validation-data", str(P.REPO / "corpus" / "validation" / "filsafat-002.txt"),  # the final eval: small
    ]  # fmt: skip
    start = time.time()
    subprocess.run(args, check=True, cwd=P.REPO, capture_output=True, text=True)
    wall = time.time() - start
    with open(output / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(r["loss"]) for r in rows if r.get("loss")]
    runtime = [float(r["train_runtime"]) for r in rows if r.get("train_runtime")][-1]  # the run's total
    return {
        "threads": threads,
        "bf16": bf16,
        "repeat": repeat,
        "seconds_per_step": runtime / steps,
        "loss_last_10": sum(losses[-10:]) / len(losses[-10:]),
        "wall_s": wall,
    }


def summarize() -> list[dict]:
    """The arms' figures read back from their run folders, finished or stopped (a bf16 arm ran ~20x slower here
    and was stopped): seconds per step from the logged runtime, the loss at each logged step."""
    found = []
    for folder in sorted(p for p in WORK.iterdir() if (p / "metrics.csv").is_file()):
        with open(folder / "metrics.csv", newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("loss")]
        found.append(
            {
                "arm": folder.name,
                "steps_logged": len(rows),
                "seconds_per_step": float(rows[-1]["train_runtime"]) / len(rows),
                "tokens_per_second": float(rows[-1]["tokens_per_second"]),
                "loss_by_step": [round(float(r["loss"]), 4) for r in rows],
            }
        )
        P.log(json.dumps({k: v for k, v in found[-1].items() if k != "loss_by_step"}))
    P.write_json(P.RESULTS / "base" / "train_speed.json", found)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--summarize", action="store_true", help="only read the arms' run folders back")
    args = parser.parse_args(argv)
    if args.summarize:
        summarize()
        return 0
    P.require_data()
    text = P.REPO / "runs" / "base-data" / "text-train.txt"
    if not text.is_file():
        print(f"skipping: {text} is missing (run experiments/base_data.py first)")
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    lines = text.read_text(encoding="utf-8").splitlines()[:TEXT_LINES]
    (WORK / "text.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if not (WORK / "tokenizer" / "tokenizer.json").is_file():
        from ringan.data import read_dialogues
        from ringan.tokenization import train_tokenizer

        entries = read_dialogues([P.REPO / "corpus" / "train", P.REPO / "runs" / "base-data" / "dialogues-train.txt"])
        train_tokenizer(entries, vocab_size=P.VOCAB_SIZE, extra_texts=lines).save_pretrained(str(WORK / "tokenizer"))
    results = []
    for repeat in range(2):
        for threads, bf16 in ARMS:
            results.append(run_arm(threads, bf16, args.steps, repeat))
            P.log(json.dumps(results[-1]))
    print("| threads | bf16 | s/step (2 runs) | vs 1 thread fp32 | loss, last 10 steps |")
    print("| --- | --- | --- | --- | --- |")
    baseline = [r["seconds_per_step"] for r in results if r["threads"] == 1 and not r["bf16"]]
    for threads, bf16 in ARMS:
        arm = [r for r in results if r["threads"] == threads and r["bf16"] == bf16]
        speeds = [r["seconds_per_step"] for r in arm]
        ratio = sum(b / s for b, s in zip(baseline, speeds, strict=True)) / len(arm)
        loss = sum(r["loss_last_10"] for r in arm) / len(arm)
        print(f"| {threads} | {bf16} | {speeds[0]:.2f}, {speeds[1]:.2f} | {ratio:.2f}x | {loss:.4f} |")
    P.write_json(P.RESULTS / "base" / "train_speed.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
