"""Which sequence mixer: Ringan variants against the same-size Llama at equal training tokens (issue: quality).

Protocol (`protocol.py`): pre-train on the text sources + IndoSMD dialogues, then fine-tune on XPersona-train +
corpus-train for FINETUNE_EPOCHS, each phase with warm-up and cosine decay on the package's Trainer arguments;
bits per byte on held-out prose, XPersona and corpus entries. The learning rate is swept for every model.

    python experiments/mixer_choice.py --stage screen        # 2M tokens, LR sweep, every candidate
    python experiments/mixer_choice.py --stage final         # 8M tokens, 3 seeds, the finalists and Llama
    python experiments/mixer_choice.py --report              # tables (stdout, results/mixer/summary.json), plots

Each run writes `results/mixer/<name>.json`; finished runs are skipped, so a stopped stage resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import os

import protocol as P
from mixer_report import best_lr, report, score

OUT = P.RESULTS / "mixer"
FINETUNE_EPOCHS = 2

# Every field that differs from today's RinganConfig defaults is spelled out, so a rerun builds the models that
# were measured (the screen ran before the defaults became its winner).
SCREEN_BASE = {
    "kind": "ringan",
    "conv_size": 0,
    "use_output_gate": False,
    "gated_mlp": False,
    "hidden_act": "gelu",
    "intermediate_size": 1024,
    "conditioning": "ids",  # unused here (no ids are passed); the parameter counts include its tables
}
CANDIDATES = {
    "llama": {"kind": "llama"},
    "gated_delta+conv+gate": {**SCREEN_BASE, "attention_type": "gated_delta", "conv_size": 4, "use_output_gate": True},
    "linear": {**SCREEN_BASE, "attention_type": "linear"},
    "delta+conv+gate": {**SCREEN_BASE, "attention_type": "delta", "conv_size": 4, "use_output_gate": True},
    "gated+conv+gate": {**SCREEN_BASE, "attention_type": "gated", "conv_size": 4, "use_output_gate": True},
    "linear+conv+gate": {**SCREEN_BASE, "attention_type": "linear", "conv_size": 4, "use_output_gate": True},
    "gated_delta+conv+gate+swiglu": {  # Llama's FFN at equal parameters (3 x 256 x 688 = 2 x 256 x 1024)
        **SCREEN_BASE,
        "attention_type": "gated_delta",
        "conv_size": 4,
        "use_output_gate": True,
        "gated_mlp": True,
        "hidden_act": "silu",
        "intermediate_size": 688,
    },
}
ABLATIONS = {  # run at the best learning rate of their parent, the screen's winner
    "gated_delta+gate+swiglu (no conv)": ("gated_delta+conv+gate+swiglu", {"conv_size": 0}),
    "gated_delta+conv+gate+swiglu (no RoPE)": ("gated_delta+conv+gate+swiglu", {"use_rope": False}),
}
SCREEN_TOKENS = 2_000_000
FINAL_TOKENS = 8_000_000
LEARNING_RATES = [3e-3, 1.5e-3]  # then factor-of-2 steps past whichever edge is best (screen_jobs)
MAX_RATES = 5
CONTENDER_GAP = 0.015


def run_name(model: str, lr: float, seed: int, tokens: int) -> str:
    return f"{model}_lr{lr:g}_s{seed}_{tokens // 1_000_000}M".replace(" ", "").replace("(", "").replace(")", "")


def worker(job: dict) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("RINGAN_THREADS", "1")))
    splits = P.load_splits()
    tok = P.get_tokenizer(splits)
    pre = P.pretrain_blocks(splits, tok)
    fine = P.packed(P.entry_examples(splits.dialogue_train, tok))
    heldout = P.heldout_sets(splits, tok)
    tokens_per_step = P.BATCH_SIZE * P.SEQ_LEN
    fine_steps = math.ceil(FINETUNE_EPOCHS * len(fine) / P.BATCH_SIZE)
    pre_steps = max(1, (job["tokens"] - fine_steps * tokens_per_step) // tokens_per_step)
    work = P.WORK / "mixer" / job["name"]
    model = P.build_model(job["spec"], len(tok), job["seed"])
    n_params = sum(p.numel() for p in model.parameters())
    P.log(f"{job['name']}: {n_params:,} parameters, {pre_steps} + {fine_steps} steps")

    result = {"job": job, "parameters": n_params, "pretrain_steps": pre_steps, "finetune_steps": fine_steps}
    result["pretrain"] = P.train_phase(model, pre, work / "pretrain", pre_steps, job["lr"], job["seed"])
    result["after_pretrain"] = {"prose": P.evaluate(model, heldout["prose"])}
    P.log(f"{job['name']}: after pre-training, prose bpb {result['after_pretrain']['prose']['bits_per_byte']:.4f}")
    result["finetune"] = P.train_phase(model, fine, work / "finetune", fine_steps, job["lr"], job["seed"])
    result["final"] = {name: P.evaluate(model, examples) for name, examples in heldout.items()}
    P.log(f"{job['name']}: " + ", ".join(f"{k} bpb {v['bits_per_byte']:.4f}" for k, v in result["final"].items()))
    if job.get("keep_model"):
        model.save_pretrained(str(work / "model"))
    P.write_json(OUT / f"{job['name']}.json", result)


def prepare() -> None:
    """Build the tokenizer and the token caches once, before workers start."""
    splits = P.load_splits()
    tok = P.get_tokenizer(splits)
    pre = P.pretrain_blocks(splits, tok)
    held = P.heldout_sets(splits, tok)
    n_pre = sum(len(b["input_ids"]) for b in pre)
    P.log(
        f"tokenizer {len(tok)}; pre-training {len(pre)} blocks, {n_pre:,} tokens; held-out "
        + ", ".join(f"{k} {sum(len(x['input_ids']) for x in v):,} tokens" for k, v in held.items())
    )


def load_results() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(OUT.glob("*.json")) if p.name != "summary.json"}


def screen_jobs(results: dict) -> list[dict]:
    """The next screening runs. Every candidate starts at LEARNING_RATES; then, while a model's best rate is at the
    edge of what was tried, the next factor-of-2 step past that edge (at most MAX_RATES rates per model). The
    ablations run at their parent's best rate once the parent's sweep is bracketed."""
    jobs = []
    done = {}
    for r in results.values():
        if r["job"]["tokens"] == SCREEN_TOKENS and r["job"]["seed"] == 0:
            done.setdefault(r["job"]["model"], {})[r["job"]["lr"]] = score(r)
    bracketed = {}
    best_score = min((min(t.values()) for t in done.values() if t), default=None)
    for model, spec in CANDIDATES.items():
        tried = done.get(model, {})
        rates = [lr for lr in LEARNING_RATES if lr not in tried]
        # a candidate whose best is more than CONTENDER_GAP behind the best model gets no rates past the first two
        behind = bool(tried) and best_score is not None and min(tried.values()) > best_score * (1 + CONTENDER_GAP)
        if not rates and len(tried) < MAX_RATES and not behind:
            best = min(tried, key=tried.get)
            if best == min(tried):
                rates = [best / 2]
            elif best == max(tried):
                rates = [best * 2]
        bracketed[model] = not rates and len(tried) >= 2
        jobs += [{"model": model, "spec": spec, "lr": lr, "seed": 0, "tokens": SCREEN_TOKENS} for lr in rates]
    for name, (parent, overrides) in ABLATIONS.items():
        if bracketed.get(parent) and name not in done:
            lr = best_lr(results, parent, SCREEN_TOKENS)
            jobs.append(
                {
                    "model": name,
                    "spec": {**CANDIDATES[parent], **overrides},
                    "lr": lr,
                    "seed": 0,
                    "tokens": SCREEN_TOKENS,
                }
            )
    # one rate per model first: the comparison fills in evenly
    # untried candidates first (both starting rates at once), then the rest one rate per model at a time
    rank, seen = [], {}
    for j in jobs:
        seen[j["model"]] = seen.get(j["model"], -1) + 1
        rank.append(-1 if j["model"] not in done else seen[j["model"]])
    return [j for _, j in sorted(zip(rank, jobs), key=lambda pair: pair[0])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["screen", "final"])
    parser.add_argument("--models", nargs="+", help="limit to these candidates")
    parser.add_argument("--finalists", nargs="+", default=[], help="Ringan candidates for the final stage")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds for the final stage")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    P.require_data()
    from jobs import run_jobs

    if args.stage == "screen":
        prepare()
        while True:  # plan a round, run it, plan again: the next rates depend on the results
            jobs = [j for j in screen_jobs(load_results()) if not args.models or j["model"] in args.models]
            for j in jobs:
                j["name"] = run_name(j["model"], j["lr"], j["seed"], j["tokens"])
            todo = [j for j in jobs if not (OUT / f"{j['name']}.json").exists()]
            if not todo:
                break
            P.log(f"screen: {len(todo)} runs planned; running {min(len(todo), args.parallel)}")
            run_jobs(__file__, todo[: args.parallel], P.WORK / "logs" / "mixer", parallel=args.parallel)
    elif args.stage == "final":
        prepare()
        results = load_results()
        jobs = []
        for model in ["llama", *args.finalists]:
            lr = best_lr(results, model, SCREEN_TOKENS)
            jobs += [
                {
                    "model": model,
                    "spec": CANDIDATES[model],
                    "lr": lr,
                    "seed": s,
                    "tokens": FINAL_TOKENS,
                    "keep_model": True,
                }
                for s in args.seeds
            ]
        for j in jobs:
            j["name"] = run_name(j["model"], j["lr"], j["seed"], j["tokens"])
        todo = [j for j in jobs if not (OUT / f"{j['name']}.json").exists()]
        P.log(f"{len(todo)} of {len(jobs)} runs to do")
        run_jobs(__file__, todo, P.WORK / "logs" / "mixer", parallel=args.parallel)
    if args.report:
        report(load_results(), OUT)


if __name__ == "__main__":
    main()
