"""What happens past the training length (1024)? Loss in position bins out to ~148k tokens.

    python experiments/long_context.py --runs NAME [NAME ...]   # mixer_choice.py final runs (kept models)

The stream: the held-out prose of every text source (the protocol's last 2% of each file, never trained on), its
lines shuffled with a fixed seed (so the kind of text does not drift along the stream) and concatenated, each
line as in pre-training (`<s>` line `\\n\\n` `</s>`). These are unrelated sentences and paragraphs: the stream
measures robustness far past the training length, not the use of long-range information.

Models: final runs of the mixer experiment (pre-training + dialogue fine-tuning), trained on 1024-token sequences.
  - Ringan, carried: the whole stream in segments of 1024 with a `RinganCache` carrying the state (and the
    RoPE position) from segment to segment, so position p sees all p earlier tokens.
  - Ringan, reset (control): a fresh state every 1024 tokens (the training condition).
  - Llama: one forward over the first LLAMA_TOKENS tokens; and Llama reset every 1024 tokens.
Per-token losses are averaged in log-spaced position bins.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

import protocol as P

SEGMENT = 1024
LLAMA_TOKENS = 32768
OUT = P.RESULTS / "long_context.json"


def build_stream(splits, tok) -> list[int]:
    lines = [line for held in splits.text_heldout.values() for line in held]
    random.Random(0).shuffle(lines)
    ids: list[int] = []
    for line in lines:
        ids += tok(line + "\n\n")["input_ids"] + [tok.eos_token_id]
    return ids


def token_nll(logits, targets):
    import torch

    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")


def segment_nll(ids, forward):
    """nll[p] = -log P(ids[p+1] | ...) with the stream fed in SEGMENT-token pieces; `forward(seg)` returns the
    piece's logits, and the last logits of one piece predict the first token of the next."""
    import torch

    x = torch.tensor(ids)
    out = torch.empty(len(ids) - 1)
    prev_last = None
    with torch.no_grad():
        for start in range(0, len(ids), SEGMENT):
            seg = x[start : start + SEGMENT]
            logits = forward(seg)
            if prev_last is not None:
                out[start - 1] = token_nll(prev_last[None], seg[:1])[0]
            n = min(len(seg) - 1, len(ids) - 1 - start)
            if n > 0:
                out[start : start + n] = token_nll(logits[:n], seg[1 : n + 1])
            prev_last = logits[-1]
    return out


def ringan_nll(model, ids, carry: bool):
    """nll[p] = -log P(ids[p+1] | ids[:p+1]) (carry) or given only the tokens since the last reset."""
    from ringan import RinganCache

    cache = [RinganCache(len(model.model.layers), 1)]

    def forward(seg):
        if not carry:
            cache[0] = RinganCache(len(model.model.layers), 1)
        return model(input_ids=seg[None], cache=cache[0], use_cache=True).logits[0]

    return segment_nll(ids, forward)


def llama_nll(model, ids, length: int | None):
    """One forward over ids[:length] (length None: non-overlapping windows of SEGMENT, a reset every window)."""
    import torch

    if length is None:
        return segment_nll(ids, lambda seg: model(input_ids=seg[None], use_cache=False).logits[0])
    x = torch.tensor(ids)[:length]
    with torch.no_grad():
        hidden = model.model(input_ids=x[None], use_cache=False).last_hidden_state[0]
        out = torch.empty(len(x) - 1)
        for s in range(0, len(x) - 1, 2048):
            e = min(s + 2048, len(x) - 1)
            out[s:e] = token_nll(model.lm_head(hidden[s:e]), x[s + 1 : e + 1])
    return out


def bins_for(n: int) -> list[tuple[int, int]]:
    """Log-spaced bins over the position of the predicting token: [0,16), [16,32), ..., last bin up to n."""
    edges = [0] + [2**k for k in range(4, 40) if 2**k < n]
    # the last power-of-two bin swallows a short tail so the last bin is not tiny
    if n - edges[-1] < edges[-1] - edges[-2]:
        edges[-1] = n
    else:
        edges.append(n)
    return list(zip(edges[:-1], edges[1:]))


def binned(nll, bins):
    return [float(nll[a:b].mean()) if b <= len(nll) + 1 else None for a, b in bins]  # +1: nll has n-1 entries


def plot(curves: dict, bins, n: int, suffix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centers = [math.sqrt(max(a, 1) * b) for a, b in bins]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    colors = {model: f"C{i}" for i, model in enumerate(dict.fromkeys(name.split("/")[0] for name in curves))}
    for name, curve in curves.items():
        model, mode = name.split("/")
        xs = [c for c, v in zip(centers, curve) if v is not None]
        ys = [v for v in curve if v is not None]
        style = "-" if mode in ("carried", "single") else "--"
        label = f"{model} ({'state carried' if mode == 'carried' else 'one forward' if mode == 'single' else 'reset every 1024'})"
        axes[0].plot(xs, ys, style, color=colors[model], marker="o", markersize=3, label=label)
    for name, curve in curves.items():
        model, mode = name.split("/")
        if mode in ("carried", "single"):
            ref = curves[f"{model}/reset"]
            xs = [c for c, v, r in zip(centers, curve, ref) if v is not None]
            ys = [v / r for v, r in zip(curve, ref) if v is not None]
            axes[1].plot(xs, ys, color=colors[model], marker="o", markersize=3, label=model)
    for ax in axes:
        ax.set_xscale("log")
        ax.axvline(1024, color="gray", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
        ax.set_xlabel("position in the stream (tokens, log scale); dotted: training length")
    axes[0].set_ylabel("loss (nats/token), bin mean")
    axes[0].set_title(f"held-out prose stream, {n} tokens")
    axes[0].set_ylim(top=min(12, axes[0].get_ylim()[1]))
    axes[0].legend(fontsize=7)
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[1].axhline(1.05, color="gray", lw=0.8, ls="--")
    axes[1].set_ylabel("loss / loss with reset every 1024 (same tokens)")
    axes[1].set_title("relative to the within-training-length control")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(P.RESULTS / f"long_context{suffix}.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="mixer_choice.py run names with a kept model")
    parser.add_argument("--llama-tokens", type=int, default=LLAMA_TOKENS)
    parser.add_argument("--replot", action="store_true", help="redraw the figure from the saved JSON only")
    args = parser.parse_args()
    if args.replot:
        saved = json.loads(OUT.read_text())
        plot(saved["curves"], [tuple(b) for b in saved["bins"]], saved["stream_tokens"] - 1, "")
        return
    P.require_data()
    import torch
    from transformers import AutoModelForCausalLM

    import ringan  # noqa: F401

    torch.set_num_threads(1)
    start = time.time()
    splits = P.load_splits()
    tok = P.get_tokenizer(splits)
    ids = build_stream(splits, tok)
    n = len(ids) - 1  # predicted tokens
    bins = bins_for(n)
    P.log(f"stream: {len(ids)} tokens of held-out prose; bins {bins}")
    curves, timing, nlls, kinds = {}, {}, {}, {}
    for run in args.runs:
        model = AutoModelForCausalLM.from_pretrained(str(P.WORK / "mixer" / run / "model")).eval()
        name = run.split("_lr")[0]
        kinds[name] = "ringan" if P.is_ringan(model) else "llama"
        modes = ["carried", "reset"] if kinds[name] == "ringan" else ["single", "reset"]
        for mode in modes:
            t = time.time()
            if kinds[name] == "llama":
                nll = llama_nll(model, ids, args.llama_tokens if mode == "single" else None)
            else:
                nll = ringan_nll(model, ids, carry=mode == "carried")
            timing[f"{name}/{mode}"] = {"seconds": time.time() - t, "tokens": len(nll)}
            curves[f"{name}/{mode}"] = binned(nll, bins)
            nlls[f"{name}/{mode}"] = nll
            P.log(f"{name}/{mode}: {len(nll)} tokens in {time.time() - t:.1f}s, mean loss {float(nll.mean()):.4f}")
    plot(curves, bins, n, "")

    rows = ["| position bin | " + " | ".join(curves) + " |", "| --- |" + " --- |" * len(curves)]
    for i, (a, b) in enumerate(bins):
        cells = [f"{curves[k][i]:.3f}" if curves[k][i] is not None else "–" for k in curves]
        rows.append(f"| [{a}, {b}) | " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    a, b = bins[-1]
    summary_rows = [
        f"| model | loss, positions < 1024 | last bin [{a}, {b}), state carried | same tokens, reset every 1024 | "
        "last bin / reset (same tokens) |",
        "| --- | --- | --- | --- | --- |",
    ]
    summary = {}
    for name, kind in kinds.items():
        if kind == "ringan":
            long, reset = nlls[f"{name}/carried"], nlls[f"{name}/reset"]
            lb = (a, b)
        else:
            long, reset = nlls[f"{name}/single"], nlls[f"{name}/reset"]
            lb = [(x, y) for x, y in bins if y <= len(long) + 1][-1]
        last, last_reset = float(long[lb[0] : lb[1]].mean()), float(reset[lb[0] : lb[1]].mean())
        summary[name] = {
            "first_1024": float(long[:1023].mean()),
            "last_bin": list(lb),
            "last": last,
            "reset": last_reset,
        }
        label = name if kind == "ringan" else f"{name} (one forward of {len(long) + 1} tokens; bin [{lb[0]}, {lb[1]}))"
        summary_rows.append(
            f"| {label} | {summary[name]['first_1024']:.3f} | {last:.3f} | {last_reset:.3f} | {last / last_reset - 1:+.1%} |"
        )
    summary_table = "\n".join(summary_rows)
    print(table + "\n\n" + summary_table)
    P.write_json(
        OUT,
        {
            "runs": args.runs,
            "stream_tokens": len(ids),
            "bins": bins,
            "curves": curves,
            "summary": summary,
            "table": table,
            "summary_table": summary_table,
            "timing": timing,
            "wall_seconds": time.time() - start,
        },
    )
    P.log(f"done in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
