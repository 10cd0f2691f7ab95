"""Tables and plots of the mixer experiment (`mixer_choice.py --report`), and how a run is scored (`score`,
`best_lr`: also what the screen uses to pick the next learning rates)."""

from __future__ import annotations

import statistics
from pathlib import Path

SETS = ("prose", "xpersona", "corpus")


def score(result: dict) -> float:
    """Mean of held-out prose bits per byte after pre-training (the model of prose; dialogue fine-tuning then
    trades some of it away) and XPersona held-out bits per byte after fine-tuning."""
    return (result["after_pretrain"]["prose"]["bits_per_byte"] + result["final"]["xpersona"]["bits_per_byte"]) / 2


def best_lr(results: dict, model: str, tokens: int) -> float | None:
    """The swept learning rate with the best `score`."""
    scored = [
        (score(r), r["job"]["lr"])
        for r in results.values()
        if r["job"]["model"] == model and r["job"]["tokens"] == tokens and r["job"]["seed"] == 0
    ]
    return min(scored)[1] if scored else None


def bpb(result: dict, name: str) -> float:
    """Held-out bits per byte: prose after pre-training (dialogue fine-tuning then trades some of it away),
    dialogue after fine-tuning."""
    phase = "after_pretrain" if name == "prose" else "final"
    return result[phase][name]["bits_per_byte"]


def _screen_table(results: dict, tokens: int) -> tuple[list[str], dict]:
    rows = [r for r in results.values() if r["job"]["tokens"] == tokens and r["job"]["seed"] == 0]
    models = list(dict.fromkeys(r["job"]["model"] for r in rows))
    best = {m: best_lr(results, m, tokens) for m in models}
    llama = next((r for r in rows if r["job"]["model"] == "llama" and r["job"]["lr"] == best.get("llama")), None)
    lines = [
        "| model | params | LR | prose bpb | XPersona bpb | corpus bpb | score | vs Llama (prose / XP / corpus) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(rows, key=lambda r: (models.index(r["job"]["model"]), r["job"]["lr"])):
        m, lr = r["job"]["model"], r["job"]["lr"]
        ratio = " / ".join(f"{bpb(r, s) / bpb(llama, s):.3f}" for s in SETS) if llama else "-"
        mark = "**" if lr == best[m] else ""  # speed is not reported: runs shared the machine (benchmarks/ has it)
        lines.append(
            f"| {mark}{m}{mark} | {r['parameters'] / 1e6:.2f}M | {lr:g} | {bpb(r, 'prose'):.4f} | "
            f"{bpb(r, 'xpersona'):.4f} | {bpb(r, 'corpus'):.4f} | {score(r):.4f} | {ratio} |"
        )
    return lines, best


def _final_table(results: dict, tokens: int) -> tuple[list[str], dict]:
    rows = [r for r in results.values() if r["job"]["tokens"] == tokens]
    if not rows:
        return [], {}
    by_model: dict[str, dict[int, dict]] = {}
    for r in rows:
        by_model.setdefault(r["job"]["model"], {})[r["job"]["seed"]] = r
    summary: dict = {}
    lines = [
        "| model | LR | seeds | "
        + " | ".join(f"{s} bpb (mean ± sd)" for s in SETS)
        + " | "
        + " | ".join(f"{s} vs Llama (mean; per seed)" for s in SETS)
        + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in SETS) + " | " + " | ".join("---" for _ in SETS) + " |",
    ]
    llama = by_model.get("llama", {})
    for model, seeds in by_model.items():
        values = {s: [bpb(seeds[k], s) for k in sorted(seeds)] for s in SETS}
        stats = {s: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for s, v in values.items()}
        ratios = {}
        for s in SETS:
            paired = [bpb(seeds[k], s) / bpb(llama[k], s) for k in sorted(seeds) if k in llama]
            mean_ratio = stats[s][0] / statistics.mean(bpb(r, s) for r in llama.values()) if llama else float("nan")
            ratios[s] = (mean_ratio, paired)
        summary[model] = {"stats": stats, "ratios": ratios, "seeds": sorted(seeds)}
        lr = next(iter(seeds.values()))["job"]["lr"]
        cells = " | ".join(f"{stats[s][0]:.4f} ± {stats[s][1]:.4f}" for s in SETS)
        rcells = " | ".join(f"{ratios[s][0]:.3f}; " + ", ".join(f"{x:.3f}" for x in ratios[s][1]) for s in SETS)
        lines.append(f"| {model} | {lr:g} | {len(seeds)} | {cells} | {rcells} |")
    return lines, summary


def _plot(results: dict, out: Path, tokens: int) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in results.values() if r["job"]["tokens"] == tokens and r["job"]["seed"] == 0]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for model in dict.fromkeys(r["job"]["model"] for r in rows):
        lr = best_lr(results, model, tokens)
        r = next(x for x in rows if x["job"]["model"] == model and x["job"]["lr"] == lr)
        for ax, phase in zip(axes, ("pretrain", "finetune")):
            hist = r[phase]["history"]
            ax.plot([h["step"] for h in hist], [h["loss"] for h in hist], label=f"{model} (lr {lr:g})", lw=1)
    axes[0].set_title(f"pre-training loss ({tokens / 1e6:.0f}M-token budget)")
    axes[1].set_title("dialogue fine-tuning loss")
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (nats/token)")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(top=6)
    axes[1].legend(fontsize=7)
    path = out / f"training_{tokens // 1_000_000}M.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(results: dict, out: Path) -> None:
    from protocol import write_json

    tokens_seen = sorted({r["job"]["tokens"] for r in results.values()})
    summary = {}
    for tokens in tokens_seen:
        seeds = {r["job"]["seed"] for r in results.values() if r["job"]["tokens"] == tokens}
        if seeds == {0}:
            lines, best = _screen_table(results, tokens)
            summary[f"screen_{tokens}"] = {"best_lr": best}
        else:
            lines, stats = _final_table(results, tokens)
            summary[f"final_{tokens}"] = stats
        print(f"\n### {tokens / 1e6:.0f}M training tokens\n")
        print("\n".join(lines))
        plot = _plot(results, out, tokens)
        if plot:
            print(f"\n![training curves]({plot.name})")
    write_json(out / "summary.json", summary)
