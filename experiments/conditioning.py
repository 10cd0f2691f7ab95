"""Experiment 2: do the topic and context embeddings help, and what does conditioning dropout do?

    python experiments/conditioning.py

Data where topics and contexts carry signal: every entry (XPersona 484 + shipped corpus 45) is split by
turns. The first 70% of its turns are training data; the last 30% are evaluation, fed with the full prefix
(topic header, Konteks and the first turns) with the loss counted only on the suffix tokens. So every
evaluation entry's topic and context ids are known (ids: 46 topics, 525 contexts; num_contexts = 600).

Every run starts from the prose-only checkpoint of the best Ringan variant of experiment 1
(`/tmp/ringan-exp/exp1/<variant>/prose`, ids never used there) and fine-tunes with the same budget, one entry
prefix per sequence with per-sequence ids `[B]` (the CLI's default, unpacked layout):
  - zero:    ids forced to 0 ("unknown") in training and evaluation            (seeds 0, 1, 2)
  - ids:     real ids, conditioning_dropout 0.0                                 (seeds 0, 1, 2)
  - ids-cd:  real ids, conditioning_dropout 0.1 (the config default)            (seeds 0, 1)
Each is evaluated with the real ids and with ids=None (seed 0 also with the context ids shuffled across
entries), on the suffixes of all 45 corpus entries and of every 2nd XPersona entry (242).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402
from jobs import run_jobs  # noqa: E402

ARMS = {"zero": None, "ids": 0.0, "ids-cd": 0.1}  # arm -> conditioning_dropout (None: ids forced to 0)
SEEDS = {"zero": [0, 1, 2], "ids": [0, 1, 2], "ids-cd": [0, 1]}  # the 60-minute budget: 8 runs
XPERSONA_EVAL_EVERY = 2  # evaluate on every 2nd XPersona entry (242 of 484) to bound evaluation time
PREFIX_FRACTION = 0.7
BATCH = 8  # entry prefixes per step
EPOCHS = 1.25
NUM_TOPICS, NUM_CONTEXTS = 50, 600
OUT = C.RESULTS / "conditioning.json"


def split_turns(entry):
    from ringan.data import Entry

    n = len(entry.turns)
    k = min(max(1, round(PREFIX_FRACTION * n)), n - 1) if n > 1 else n
    return Entry(entry.topic, entry.context, entry.turns[:k]), k < n


def build_sets(tok):
    """Training prefixes (no </s>: the dialogue goes on) and evaluation suffixes (loss on the suffix only)."""
    from ringan.data import LabelVocab, load_default_corpus, read_dialogues, render_entry

    groups = {"xpersona": read_dialogues(C.DATA / "xpersona-id-valid.txt"), "corpus": load_default_corpus()}
    everything = groups["xpersona"] + groups["corpus"]
    topics = LabelVocab.build([e.topic for e in everything], NUM_TOPICS, "topics")
    contexts = LabelVocab.build([e.context for e in everything], NUM_CONTEXTS, "contexts")
    train, evals = [], {}
    for group, entries in groups.items():
        evals[group] = []
        for index, e in enumerate(entries):
            prefix, has_suffix = split_turns(e)
            tid, cid = topics.id(e.topic), contexts.id(e.context)
            ids = tok(render_entry(prefix))["input_ids"]
            train.append({"input_ids": ids, "topic_id": tid, "context_id": cid})
            if not has_suffix:
                continue
            text, boundary = render_entry(e), len(render_entry(prefix))
            enc = tok(text, return_offsets_mapping=True)
            full = enc["input_ids"] + [tok.eos_token_id]
            offsets = enc["offset_mapping"] + [(len(text), len(text))]
            # target i is predicted from position i-1; special <s> (offset (0,0)) is never a target
            target = [i > 0 and offsets[i][0] >= boundary for i in range(len(full))]
            assert len(full) <= C.SEQ_LEN, "an entry is longer than one sequence"
            if group == "xpersona" and index % XPERSONA_EVAL_EVERY:
                continue
            evals[group].append(
                {
                    "input_ids": full,
                    "target": target,
                    "topic_id": tid,
                    "context_id": cid,
                    "n_bytes": len(text[boundary:].encode("utf-8")),
                }
            )
    return train, evals, topics, contexts


def batches_for_epoch(train, epoch: int, seed: int) -> list[list[dict]]:
    """Seeded shuffle, then length-sorted groups of 64 cut into batches (less padding), batches shuffled."""
    rng = random.Random(seed * 1000 + epoch)
    order = list(range(len(train)))
    rng.shuffle(order)
    batches = []
    for start in range(0, len(order), 64):
        group = sorted(order[start : start + 64], key=lambda i: len(train[i]["input_ids"]))
        batches += [[train[i] for i in group[j : j + BATCH]] for j in range(0, len(group), BATCH)]
    rng.shuffle(batches)
    return batches


def load_start(variant: str, seed: int, conditioning_dropout: float):
    """The prose checkpoint with a context table of NUM_CONTEXTS rows (row 0 copied, the rest new)."""
    import torch

    from ringan import RinganForCausalLM

    folder = C.WORK / "exp1" / variant / "prose"
    if not (folder / "config.json").exists():
        raise SystemExit(f"{folder} is missing: run `python experiments/attention_choice.py --stage main` first")
    base = C.load_model(folder)
    config = base.config
    config.num_topics, config.num_contexts = NUM_TOPICS, NUM_CONTEXTS
    config.conditioning_dropout = conditioning_dropout
    config.dropout = 0.0
    C.set_seed(seed)
    model = RinganForCausalLM(config)
    state = base.state_dict()
    old_contexts = state.pop("model.embed_contexts.weight")
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) == {"model.embed_contexts.weight"} and not unexpected, (missing, unexpected)
    with torch.no_grad():
        model.model.embed_contexts.weight[0] = old_contexts[0]
    return model


def train_run(model, train, steps: int, lr: float, seed: int, use_ids: bool) -> dict:
    import torch

    C.set_seed(seed)
    model.train()
    opt = C.make_optimizer(model, lr)
    warmup = max(1, int(0.05 * steps))
    epoch, batches, cursor, tokens, start, history = 0, batches_for_epoch(train, 0, seed), 0, 0, time.time(), []
    for step in range(steps):
        if cursor >= len(batches):
            epoch, cursor = epoch + 1, 0
            batches = batches_for_epoch(train, epoch, seed)
        batch = C.collate(batches[cursor], with_ids=True)
        cursor += 1
        if not use_ids:
            batch["topic_ids"] = torch.zeros_like(batch["topic_ids"])
            batch["context_ids"] = torch.zeros_like(batch["context_ids"])
        for group in opt.param_groups:
            group["lr"] = C.lr_at(step, steps, lr, warmup)
        loss = model(**batch, use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += int(batch["attention_mask"].sum())
        history.append(loss.item())
        if step % 20 == 0 or step == steps - 1:
            C.log(f"step {step + 1}/{steps} loss {loss.item():.4f} {tokens / (time.time() - start):.0f} tok/s")
    model.eval()
    return {"tokens": tokens, "seconds": time.time() - start, "history": history}


def suffix_loss(model, examples, mode: str, batch_size: int = 8) -> dict:
    """mode: "ids" (real ids), "none" (ids=None), "zero" (ids 0), "shuffled" (context ids permuted)."""
    import torch

    contexts = [e["context_id"] for e in examples]
    if mode == "shuffled":
        perm = list(range(len(examples)))
        random.Random(123).shuffle(perm)
        contexts = [contexts[p] for p in perm]
    nll, count, n_bytes = 0.0, 0, 0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            width = max(len(examples[i]["input_ids"]) for i in idx)
            ids = torch.zeros(len(idx), width, dtype=torch.long)
            mask = torch.zeros(len(idx), width, dtype=torch.long)
            target = torch.zeros(len(idx), width, dtype=torch.bool)
            for r, i in enumerate(idx):
                n = len(examples[i]["input_ids"])
                ids[r, :n] = torch.tensor(examples[i]["input_ids"])
                mask[r, :n] = 1
                target[r, :n] = torch.tensor(examples[i]["target"])
            kwargs = {}
            if mode != "none":
                t = [examples[i]["topic_id"] for i in idx]
                c = [contexts[i] for i in idx]
                if mode == "zero":
                    t, c = [0] * len(idx), [0] * len(idx)
                kwargs = {"topic_ids": torch.tensor(t), "context_ids": torch.tensor(c)}
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False, **kwargs).logits[:, :-1].float()
            token_nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            sel = target[:, 1:]
            nll += float(token_nll[sel].sum())
            count += int(sel.sum())
            n_bytes += sum(examples[i]["n_bytes"] for i in idx)
    return {"loss": nll / count, "bits_per_byte": nll / math.log(2) / n_bytes, "tokens": count}


def worker(job: dict) -> None:
    C.setup(job["seed"])
    data = C.load_data()
    tok = C.get_tokenizer(data)
    train, evals, _, _ = build_sets(tok)
    cd = ARMS[job["arm"]]
    model = load_start(job["variant"], job["seed"], cd if cd is not None else 0.0)
    steps = math.ceil(EPOCHS * len(train) / BATCH)
    run = train_run(model, train, steps, job["lr"], job["seed"], use_ids=cd is not None)
    result = {"arm": job["arm"], "seed": job["seed"], "steps": steps, "run": run, "eval": {}}
    modes = ["zero"] if cd is None else ["ids", "none"] + (["shuffled"] if job["seed"] == 0 else [])
    for group, examples in evals.items():
        result["eval"][group] = {mode: suffix_loss(model, examples, mode) for mode in modes}
        if cd is None:
            result["eval"][group]["none"] = result["eval"][group]["zero"]  # identical inputs when ids are 0
    C.log(job["name"], json.dumps(result["eval"]))
    C.write_json(Path(job["out"]), result)


def summarize(results: list[dict]) -> tuple[str, dict]:
    def stats(values):
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), min(values), max(values)

    summary, rows = {}, []
    rows.append(
        "| arm | eval ids | seeds | XPersona suffix loss (mean ± sd, [min, max]) | corpus suffix loss (mean ± sd, [min, max]) | XPersona bpb | corpus bpb |"
    )
    rows.append("| --- | --- | --- | --- | --- | --- | --- |")
    for arm in ARMS:
        modes = ["zero"] if arm == "zero" else ["ids", "none", "shuffled"]
        for mode in modes:
            runs = [r for r in results if r["arm"] == arm and mode in r["eval"]["corpus"]]
            cells, bpb = [], []
            for group in ("xpersona", "corpus"):
                m, sd, lo, hi = stats([r["eval"][group][mode]["loss"] for r in runs])
                summary[f"{arm}/{mode}/{group}"] = {"mean": m, "sd": sd, "min": lo, "max": hi, "n": len(runs)}
                cells.append(f"{m:.4f} ± {sd:.4f} [{lo:.4f}, {hi:.4f}]")
                bpb.append(statistics.mean(r["eval"][group][mode]["bits_per_byte"] for r in runs))
            label = {"ids": "real ids", "none": "None", "shuffled": "contexts shuffled", "zero": "0 (None)"}[mode]
            rows.append(f"| {arm} | {label} | {len(runs)} | {cells[0]} | {cells[1]} | {bpb[0]:.4f} | {bpb[1]:.4f} |")
    return "\n".join(rows), summary


def paired_deltas(results: list[dict]) -> str:
    """Per seed: loss(arm, mode) - loss(zero) on the same seed (the same init and data order)."""
    rows = [
        "| comparison (per seed, same init and data order) | XPersona Δloss per seed | corpus Δloss per seed |",
        "| --- | --- | --- |",
    ]
    zero = {r["seed"]: r for r in results if r["arm"] == "zero"}
    for arm, mode in [
        ("ids", "ids"),
        ("ids-cd", "ids"),
        ("ids", "none"),
        ("ids-cd", "none"),
        ("ids", "shuffled"),
        ("ids-cd", "shuffled"),
    ]:
        cells = []
        for group in ("xpersona", "corpus"):
            d = [
                r["eval"][group][mode]["loss"] - zero[r["seed"]]["eval"][group]["zero"]["loss"]
                for r in results
                if r["arm"] == arm and r["seed"] in zero and mode in r["eval"][group]
            ]
            cells.append(", ".join(f"{x:+.4f}" for x in d))
        rows.append(f"| {arm} evaluated with {mode} − zero | {cells[0]} | {cells[1]} |")
    return "\n".join(rows)


def plot(results: list[dict], summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    labels = ["zero\n(ids 0)", "ids\nreal ids", "ids\nNone", "ids-cd 0.1\nreal ids", "ids-cd 0.1\nNone"]
    keys = ["zero/zero", "ids/ids", "ids/none", "ids-cd/ids", "ids-cd/none"]
    for ax, group in zip(axes, ("xpersona", "corpus")):
        for x, key in enumerate(keys):
            arm, mode = key.split("/")
            values = [r["eval"][group][mode]["loss"] for r in results if r["arm"] == arm]
            ax.scatter([x] * len(values), values, color="C0", alpha=0.6)
            ax.errorbar(
                [x],
                [summary[f"{key}/{group}"]["mean"]],
                yerr=[summary[f"{key}/{group}"]["sd"]],
                fmt="_",
                color="k",
                capsize=6,
                markersize=20,
            )
        ax.set_xticks(range(len(keys)), labels, fontsize=8)
        ax.set_title(f"{group}: suffix loss (last 30% of turns)")
        ax.set_ylabel("loss (nats/token)")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(C.RESULTS / "conditioning.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker")
    parser.add_argument("--variant", help="Ringan attention type to start from (default: best of experiment 1)")
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    C.require_data()
    if args.worker:
        worker(json.loads(args.worker))
        return
    start = time.time()
    exp1 = (
        json.loads((C.RESULTS / "attention_choice.json").read_text())
        if (C.RESULTS / "attention_choice.json").exists()
        else None
    )
    variant = args.variant
    if variant is None:
        if exp1 is None:
            raise SystemExit(
                "no experiments/results/attention_choice.json: run attention_choice.py first or pass --variant"
            )
        scores = {
            m: (r["final"]["xpersona"]["bits_per_byte"] + r["final"]["corpus"]["bits_per_byte"]) / 2
            for m, r in exp1["results"].items()
            if m != "llama"
        }
        variant = min(scores, key=scores.get)
    lr = exp1["settings"]["lr"]["ringan"] if exp1 else 4e-3
    C.log(f"starting from the prose checkpoint of {variant}, lr {lr}")
    C.setup(0)
    data = C.load_data()
    tok = C.get_tokenizer(data)
    train, evals, topics, contexts = build_sets(tok)
    C.log(
        f"{len(train)} training prefixes ({sum(len(t['input_ids']) for t in train)} tokens), eval suffix entries "
        f"{ {g: len(v) for g, v in evals.items()} }, topics {len(topics)}, contexts {len(contexts)}"
    )
    tmp = C.WORK / "exp2"
    jobs = [
        {
            "name": f"exp2-{arm}-s{seed}",
            "arm": arm,
            "seed": seed,
            "variant": variant,
            "lr": lr,
            "out": str(tmp / f"{arm}-s{seed}.json"),
        }
        for seed in range(3)
        for arm in ARMS
        if seed in SEEDS[arm]
    ]
    run_jobs(__file__, jobs, C.WORK / "logs", args.parallel)
    results = [json.loads(Path(j["out"]).read_text()) for j in jobs]
    table, summary = summarize(results)
    deltas = paired_deltas(results)
    plot(results, summary)
    print(table + "\n\n" + deltas)
    for r in results:
        r["run"]["history"] = r["run"]["history"][::10]
    C.write_json(
        OUT,
        {
            "variant": variant,
            "lr": lr,
            "results": results,
            "summary": summary,
            "table": table,
            "deltas": deltas,
            "wall_seconds": time.time() - start,
            "data": {
                "train_prefixes": len(train),
                "train_tokens": sum(len(t["input_ids"]) for t in train),
                "eval_entries": {g: len(v) for g, v in evals.items()},
                "eval_tokens": {g: sum(sum(e["target"]) for e in v) for g, v in evals.items()},
                "topics": len(topics),
                "contexts": len(contexts),
            },
            "settings": {
                "batch": BATCH,
                "epochs": EPOCHS,
                "prefix_fraction": PREFIX_FRACTION,
                "seeds": SEEDS,
                "xpersona_eval_every": XPERSONA_EVAL_EVERY,
            },
        },
    )
    C.log(f"done in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
