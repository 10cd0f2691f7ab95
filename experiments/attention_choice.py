"""Experiment 1: which attention type should Ringan use? Ringan (retention / linear / gated) against a
same-size `LlamaForCausalLM`, with the same tokenizer, data, token budget, sequence length (1024),
optimizer, LR schedule and seed.

    python experiments/attention_choice.py --stage sweep   # short LR sweep (retention and llama, prose only)
    python experiments/attention_choice.py --stage main    # the comparison (uses the LRs chosen by the sweep)
    python experiments/attention_choice.py --stage main --seed 1 --models linear   # a replicate (other init/order)

Each model: pre-train on prose (the first 85% of the prose characters), then train on dialogues (XPersona
train 90% + shipped corpus train 90%, split by entry), then evaluate on the held-out XPersona and
shipped-corpus entries. Topic/context ids are all 0 here (Llama has no such inputs): this compares the
sequence mixers only. Checkpoints go to /tmp/ringan-exp/exp1/<model>/{prose,final} for experiments 3 and 4.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402
from jobs import run_jobs  # noqa: E402

MODELS = ["retention", "linear", "gated", "llama"]
SWEEP_LRS = [1e-3, 2e-3, 4e-3]
SWEEP_STEPS = 30
# Chosen by the sweep (see RESULTS.md); each Ringan variant uses the retention LR.
LR = {"ringan": 4e-3, "llama": 2e-3}
BATCH = 4  # sequences of 1024 tokens per step
PROSE_STEPS = 175  # ~0.98 epoch of the training prose (718 windows of 1024)
DIALOGUE_STEPS = 60  # ~1.4 epochs of the training dialogues (~167k tokens)
SEED = 0
OUT = C.RESULTS / "attention_choice.json"
SWEEP_OUT = C.RESULTS / "attention_sweep.json"


def prose_windows(data, tok):
    from ringan.training import text_to_examples

    return text_to_examples(data.prose_train, tok, C.SEQ_LEN)


def prose_order(n: int, epoch: int, seed: int = 0) -> list[int]:
    order = list(range(n))
    random.Random(1000 + epoch + 7919 * seed).shuffle(order)
    return order


def worker(job: dict) -> None:
    C.setup(job["seed"])
    data = C.load_data()
    tok = C.get_tokenizer(data)
    windows = prose_windows(data, tok)

    def prose_blocks(epoch):
        return [windows[i] for i in prose_order(len(windows), epoch, job["seed"])]

    C.set_seed(job["seed"])
    model = C.build_model(job["model"], len(tok))
    result = {"model": job["model"], "lr": job["lr"], "params": C.n_params(model), "batch": BATCH}
    t0 = time.time()
    label = f"[{job['name']}]"
    if job["stage"] == "sweep":
        run = C.train(model, prose_blocks, job["steps"], BATCH, job["lr"], job["seed"], False, label=label)
        # windows the sweep never trained on (it uses the first steps*BATCH of the epoch-0 order)
        order = prose_order(len(windows), 0)
        held = [windows[i] for i in order[-24:]]
        result.update(eval_prose=C.evaluate(model, held), run=run)
        C.write_json(Path(job["out"]), result)
        return
    out_dir = C.WORK / ("exp1" if job["seed"] == SEED else f"exp1-seed{job['seed']}") / job["model"]
    run1 = C.train(
        model, prose_blocks, job["prose_steps"], BATCH, job["lr"], job["seed"], False, label=label + " prose"
    )
    model.save_pretrained(out_dir / "prose")
    tok.save_pretrained(str(out_dir / "prose"))
    xp_val = C.dialogue_examples(data.xp_val, tok)
    corpus_val = C.dialogue_examples(data.corpus_val, tok)
    result["after_prose"] = {"xpersona": C.evaluate(model, xp_val), "corpus": C.evaluate(model, corpus_val)}
    C.log(label, "after prose", result["after_prose"])

    dialogues = C.dialogue_examples(data.xp_train + data.corpus_train, tok)

    def dialogue_blocks(epoch):
        return C.pack(dialogues, seed=2000 + epoch + 7919 * job["seed"])

    run2 = C.train(
        model, dialogue_blocks, job["dialogue_steps"], BATCH, job["lr"], job["seed"], False, label=label + " dialogue"
    )
    model.save_pretrained(out_dir / "final")
    tok.save_pretrained(str(out_dir / "final"))
    result["final"] = {"xpersona": C.evaluate(model, xp_val), "corpus": C.evaluate(model, corpus_val)}
    result["prose_run"], result["dialogue_run"] = run1, run2
    result["wall_seconds"] = time.time() - t0
    C.log(label, "final", result["final"])
    C.write_json(Path(job["out"]), result)


def speed_benchmark(vocab_size: int, reps: int = 3) -> dict:
    """Training-step and forward throughput at 4 x 1024, one thread, models interleaved (the machine is shared)."""
    import torch

    C.setup(0)
    models = {name: C.build_model(name, vocab_size) for name in MODELS}
    x = torch.randint(4, vocab_size, (BATCH, C.SEQ_LEN))
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x}
    times = {name: {"train": [], "forward": []} for name in MODELS}
    for rep in range(reps + 1):
        for name, model in models.items():
            model.train()
            t = time.perf_counter()
            model(**batch, use_cache=False).loss.backward()
            train_s = time.perf_counter() - t
            model.zero_grad(set_to_none=True)
            model.eval()
            with torch.no_grad():
                t = time.perf_counter()
                model(input_ids=x, use_cache=False)
                fwd_s = time.perf_counter() - t
            if rep:  # the first round is a warm-up
                times[name]["train"].append(train_s)
                times[name]["forward"].append(fwd_s)
    n = BATCH * C.SEQ_LEN
    return {
        name: {
            "train_tokens_per_s": n / statistics.median(t["train"]),
            "forward_tokens_per_s": n / statistics.median(t["forward"]),
        }
        for name, t in times.items()
    }


def fmt_table(results: dict) -> str:
    rows = [
        "| model | params | LR | XPersona loss | ppl | bpb | corpus loss | ppl | bpb | bpb vs Llama (XP / corpus) | train tok/s (in run) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    llama = results["llama"]["final"]
    for name in MODELS:
        r = results[name]
        xp, co = r["final"]["xpersona"], r["final"]["corpus"]
        rel_xp = xp["bits_per_byte"] / llama["xpersona"]["bits_per_byte"] - 1
        rel_co = co["bits_per_byte"] / llama["corpus"]["bits_per_byte"] - 1
        speed = (r["prose_run"]["tokens"] + r["dialogue_run"]["tokens"]) / (
            r["prose_run"]["seconds"] + r["dialogue_run"]["seconds"]
        )
        rows.append(
            f"| {name} | {r['params'] / 1e6:.2f}M | {r['lr']:g} | {xp['loss']:.3f} | {xp['perplexity']:.1f} | "
            f"{xp['bits_per_byte']:.3f} | {co['loss']:.3f} | {co['perplexity']:.1f} | {co['bits_per_byte']:.3f} | "
            f"{rel_xp:+.1%} / {rel_co:+.1%} | {speed:.0f} |"
        )
    return "\n".join(rows)


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in MODELS:
        r = results[name]
        for ax, key in zip(axes, ["prose_run", "dialogue_run"]):
            h = r[key]["history"]
            losses = [x["loss"] for x in h]
            k = 5
            smooth = [
                sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1])
                for i in range(len(losses))
            ]
            ax.plot([x["tokens"] / 1e3 for x in h], smooth, label=name)
    axes[0].set_title("pre-training on prose (train loss, 5-step mean)")
    axes[1].set_title("training on dialogues (train loss, 5-step mean)")
    for ax in axes:
        ax.set_xlabel("tokens (thousands)")
        ax.set_ylabel("loss (nats/token)")
        ax.legend()
        ax.grid(alpha=0.3)
    axes[0].set_ylim(top=8)
    fig.tight_layout()
    fig.savefig(C.RESULTS / "attention_training.png", dpi=110)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.38
    xs = range(len(MODELS))
    ax.bar(
        [x - width / 2 for x in xs],
        [results[m]["final"]["xpersona"]["bits_per_byte"] for m in MODELS],
        width,
        label="XPersona (held out)",
    )
    ax.bar(
        [x + width / 2 for x in xs],
        [results[m]["final"]["corpus"]["bits_per_byte"] for m in MODELS],
        width,
        label="shipped corpus (held out)",
    )
    ax.set_xticks(list(xs), MODELS)
    ax.set_ylabel("bits per byte")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(C.RESULTS / "attention_bpb.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", choices=["sweep", "main"])
    parser.add_argument("--worker")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument(
        "--seed", type=int, default=SEED, help="main stage: a replicate with another init and data order"
    )
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS, help="main stage, with --seed")
    args = parser.parse_args()
    C.require_data()
    if args.worker:
        worker(json.loads(args.worker))
        return
    if args.stage is None:
        parser.error("--stage is required")
    start = time.time()
    C.setup(0)
    data = C.load_data()
    tok = C.get_tokenizer(data)  # trained once here, before the workers start
    tmp = C.WORK / "exp1" / "parts"
    if args.stage == "sweep":
        jobs = [
            {
                "name": f"sweep-{m}-{lr:g}",
                "model": m,
                "lr": lr,
                "stage": "sweep",
                "steps": SWEEP_STEPS,
                "seed": SEED,
                "out": str(tmp / f"sweep-{m}-{lr:g}.json"),
            }
            for m in ["retention", "llama"]
            for lr in SWEEP_LRS
        ]
        run_jobs(__file__, jobs, C.WORK / "logs", args.parallel)
        results = [json.loads(Path(j["out"]).read_text()) for j in jobs]
        rows = [
            "| model | LR | held-out prose loss after 30 steps (123k tokens) | last-8-steps train loss |",
            "| --- | --- | --- | --- |",
        ]
        for r in results:
            last = statistics.mean(x["loss"] for x in r["run"]["history"][-8:])
            rows.append(f"| {r['model']} | {r['lr']:g} | {r['eval_prose']['loss']:.3f} | {last:.3f} |")
            r["run"] = {k: v for k, v in r["run"].items() if k != "history"} | {"last8_loss": last}
        table = "\n".join(rows)
        print(table)
        C.write_json(SWEEP_OUT, {"results": results, "table": table, "wall_seconds": time.time() - start})
        return

    order = ["retention", "linear", "gated", "llama"]  # streams: retention->gated, linear->llama
    jobs = [
        {
            "name": f"exp1-{m}",
            "model": m,
            "lr": LR["llama" if m == "llama" else "ringan"],
            "stage": "main",
            "prose_steps": PROSE_STEPS,
            "dialogue_steps": DIALOGUE_STEPS,
            "seed": SEED,
            "out": str(tmp / f"{m}.json"),
        }
        for m in order
    ]
    if args.seed != SEED:  # a replicate: other checkpoints folder, its own small result file, no plots
        jobs = [
            j
            | {
                "seed": args.seed,
                "name": f"{j['name']}-seed{args.seed}",
                "out": str(tmp / f"{j['model']}-seed{args.seed}.json"),
            }
            for j in jobs
            if j["model"] in args.models
        ]
        run_jobs(__file__, jobs, C.WORK / "logs", args.parallel)
        rows = ["| model | seed | XPersona loss | bpb | corpus loss | bpb |", "| --- | --- | --- | --- | --- | --- |"]
        replicate = {}
        for j in jobs:
            r = json.loads(Path(j["out"]).read_text())
            xp, co = r["final"]["xpersona"], r["final"]["corpus"]
            replicate[j["model"]] = {
                "final": r["final"],
                "after_prose": r["after_prose"],
                "lr": r["lr"],
                "wall_seconds": r["wall_seconds"],
            }
            rows.append(
                f"| {j['model']} | {args.seed} | {xp['loss']:.3f} | {xp['bits_per_byte']:.3f} | {co['loss']:.3f} | {co['bits_per_byte']:.3f} |"
            )
        table = "\n".join(rows)
        print(table)
        C.write_json(
            C.RESULTS / f"attention_choice_seed{args.seed}_{'_'.join(args.models)}.json",
            {"seed": args.seed, "results": replicate, "table": table, "wall_seconds": time.time() - start},
        )
        return
    run_jobs(__file__, jobs, C.WORK / "logs", args.parallel)
    results = {m: json.loads((tmp / f"{m}.json").read_text()) for m in MODELS}
    C.log("speed benchmark")
    speed = speed_benchmark(len(tok))
    plot(results)
    table = fmt_table(results)
    speed_rows = ["| model | train step tok/s (4x1024, fwd+bwd) | forward tok/s (4x1024) |", "| --- | --- | --- |"]
    speed_rows += [
        f"| {m} | {speed[m]['train_tokens_per_s']:.0f} | {speed[m]['forward_tokens_per_s']:.0f} |" for m in MODELS
    ]
    after_rows = ["| model | XPersona bpb after prose only | corpus bpb after prose only |", "| --- | --- | --- |"]
    after_rows += [
        f"| {m} | {results[m]['after_prose']['xpersona']['bits_per_byte']:.3f} | {results[m]['after_prose']['corpus']['bits_per_byte']:.3f} |"
        for m in MODELS
    ]
    print(table, "\n\n" + "\n".join(speed_rows), "\n\n" + "\n".join(after_rows))
    for r in results.values():  # keep the JSON small: per-step history thinned to every 5th step
        for key in ("prose_run", "dialogue_run"):
            r[key]["history"] = r[key]["history"][::5] + r[key]["history"][-1:]
    C.write_json(
        OUT,
        {
            "results": results,
            "speed": speed,
            "table": table,
            "speed_table": "\n".join(speed_rows),
            "after_prose_table": "\n".join(after_rows),
            "wall_seconds": time.time() - start,
            "settings": {
                "batch": BATCH,
                "seq_len": C.SEQ_LEN,
                "prose_steps": PROSE_STEPS,
                "dialogue_steps": DIALOGUE_STEPS,
                "lr": LR,
                "seed": SEED,
            },
        },
    )
    C.log(f"done in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
