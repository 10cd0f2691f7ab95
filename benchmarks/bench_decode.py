"""Greedy `model.generate` decode speed of Ringan vs a same-size Llama (SDPA) after a long context.

One `generate(max_new_tokens=N+1)` call per (model, context), in a fresh process. A StoppingCriteria that
never stops records `time.perf_counter()` each time generate checks it, i.e. once after every new token.
The first stamp comes after the prefill and the first token; the N decode steps are the time from the
first stamp to the last, so the prefill is run (and paid) only once and is excluded from the decode time.

    python benchmarks/bench_decode.py                  # contexts 1k, 16k, 128k, 64 new tokens, 1 thread
    python benchmarks/bench_decode.py --quick
"""

from __future__ import annotations

import time
from pathlib import Path

import common as C

NAME = "decode"
DEFAULT_CONTEXTS = [1024, 16384, 131072]
QUICK_CONTEXTS = [256, 4608]


# ------------------------------------------------------------------------------------------ child side


def make_stamper():
    import torch
    from transformers import StoppingCriteria

    class Stamp(StoppingCriteria):
        """Never stops; records the time generate asks, once per generated token."""

        def __init__(self):
            self.times: list[float] = []

        def __call__(self, input_ids, scores, **kwargs):
            self.times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return Stamp()


def generate_timed(model, context: int, new_tokens: int, seed: int = 1) -> dict:
    import torch
    from transformers import StoppingCriteriaList

    ids = C.random_ids(1, context, seed=seed)
    stamp = make_stamper()
    t0 = time.perf_counter()
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens + 1,
        min_new_tokens=new_tokens + 1,
        do_sample=False,
        pad_token_id=0,
        stopping_criteria=StoppingCriteriaList([stamp]),
    )
    t_end = time.perf_counter()
    assert out.shape[1] == context + new_tokens + 1, out.shape
    assert len(stamp.times) == new_tokens + 1, len(stamp.times)
    steps = [b - a for a, b in zip(stamp.times, stamp.times[1:])]
    decode_s = stamp.times[-1] - stamp.times[0]
    return {
        "prefill_first_token_s": stamp.times[0] - t0,
        "decode_s": decode_s,
        "per_token_ms": 1000 * decode_s / new_tokens,
        "median_step_ms": 1000 * sorted(steps)[len(steps) // 2],
        "min_step_ms": 1000 * min(steps),
        "generate_total_s": t_end - t0,
    }


def job_decode(job: dict) -> dict:
    import torch

    model = C.build_model(job["model"])
    with torch.no_grad():
        generate_timed(model, 64, 8, seed=7)  # warm-up: first-call overheads of generate and the kernels
        loaded = C.rss_mb()
        r = generate_timed(model, job["context"], job["new_tokens"])
    return {**r, **C.count_params(model), **C.memory_report(loaded)}


# ------------------------------------------------------------------------------------------ parent side


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--contexts", default=None, help="comma-separated context lengths (k = 1024); default 1k,16k,128k")
    p.add_argument("--new-tokens", type=int, default=None, help="timed decode steps (default 64, quick 16)")
    p.add_argument(
        "--llama-max-seconds",
        type=float,
        default=600.0,
        help="skip Llama at a context whose prefill+decode time, extrapolated from the previous "
        "context (prefill quadratic, per-token linear), would exceed this",
    )
    args = p.parse_args()
    if args.worker:
        return C.worker_main(args, {"decode": job_decode})
    C.apply_common_args(args)

    models = C.parse_models(args.models)
    contexts = C.parse_sizes(args.contexts) or (QUICK_CONTEXTS if args.quick else DEFAULT_CONTEXTS)
    new_tokens = args.new_tokens or (16 if args.quick else 64)
    header = C.header_lines(args.threads, {"new tokens timed per context": str(new_tokens)})
    script = Path(__file__).resolve()
    t_start = time.perf_counter()

    results: dict[str, dict[int, dict]] = {m: {} for m in models}
    llama_prev = None  # (context, prefill s, per-token s)
    for ctx in contexts:
        for model in models:
            if model == "llama" and llama_prev is not None:
                c0, pre0, tok0 = llama_prev
                ratio = ctx / c0
                est_pre, est_tok = pre0 * ratio**2, tok0 * ratio
                est = est_pre + new_tokens * est_tok
                if est > args.llama_max_seconds:
                    results[model][ctx] = {"skipped": f"skipped: est. {est:,.0f} s > {args.llama_max_seconds:.0f} s"}
                    llama_prev = (ctx, est_pre, est_tok)
                    C.log(f"{model} {ctx}: {results[model][ctx]['skipped']}")
                    continue
            C.log(f"{model} decode after {ctx} ...")
            timeout = None if model == "ringan" else 3 * args.llama_max_seconds + 300
            r = C.run_job(
                script,
                {"kind": "decode", "model": model, "context": ctx, "new_tokens": new_tokens},
                args.threads,
                timeout,
            )
            results[model][ctx] = r
            if "error" in r:
                C.log(f"  ERROR {r['error']}")
                if model == "llama":
                    llama_prev = (ctx, float("inf"), float("inf"))
                continue
            C.log(
                f"  {r['per_token_ms']:.2f} ms/token (prefill {r['prefill_first_token_s']:.2f} s), "
                f"peak {r['peak_rss_mb']:.0f} MiB"
            )
            if model == "llama":
                llama_prev = (ctx, r["prefill_first_token_s"], r["per_token_ms"] / 1000)
    total_s = time.perf_counter() - t_start

    headers = ["context"]
    for m in models:
        lab = C.LABELS[m]
        headers += [
            f"{lab} ms/token",
            f"{lab} new tok/s",
            f"{lab} median step ms",
            f"{lab} prefill+1st s",
            f"{lab} peak RSS MiB",
        ]
    if len(models) == 2:
        headers.append("ms/token Llama/Ringan")
    rows, notes = [], []
    for ctx in contexts:
        row, per = [C.k_label(ctx)], {}
        for m in models:
            r = results[m][ctx]
            if "skipped" in r or "error" in r:
                row += [r.get("skipped") or "error", None, None, None, None]
                if "error" in r:
                    notes.append(f"{C.LABELS[m]} at {ctx}: {r['error']}")
                continue
            per[m] = r["per_token_ms"]
            row += [
                r["per_token_ms"],
                1000 / r["per_token_ms"],
                r["median_step_ms"],
                r["prefill_first_token_s"],
                C.fmt(r["peak_rss_mb"]) + (" (!)" if r["peak_inherited"] else ""),
            ]
        if len(models) == 2:
            row.append(per["llama"] / per["ringan"] if len(per) == 2 else None)
        rows.append(row)

    body = [
        C.models_line(),
        "",
        f"Decode: greedy `model.generate(ids, max_new_tokens={new_tokens + 1}, min_new_tokens={new_tokens + 1}, "
        "do_sample=False)` at batch 1 after a context of random tokens (generate's own prefill, with "
        "`logits_to_keep=1`). Timing: a never-stopping StoppingCriteria stamps the clock after every new token; "
        f"ms/token = (last stamp − first stamp) / {new_tokens}, i.e. {new_tokens} decode steps with all of "
        "generate's per-step overhead, prefill excluded. One generate per fresh process after a warm-up "
        "generate (64-token context, 8 tokens). 'prefill+1st' = time from the call to the first stamp.",
        "",
        C.markdown_table(headers, rows),
        "",
    ]
    summary = []
    rg = {c: r for c, r in results.get("ringan", {}).items() if "per_token_ms" in r}
    if rg:
        c_lo, c_hi = min(rg), max(rg)
        if c_hi != c_lo:
            summary.append(
                f"- Ringan per-token time at {C.k_label(c_hi)} / at {C.k_label(c_lo)}: "
                f"**{rg[c_hi]['per_token_ms'] / rg[c_lo]['per_token_ms']:.2f}** from mean ms/token, "
                f"{rg[c_hi]['median_step_ms'] / rg[c_lo]['median_step_ms']:.2f} from the median step (1.0 = flat; "
                "the median is less sensitive to steps disturbed by other jobs)"
            )
    if any("skipped" in r for r in results.get("llama", {}).values()):
        summary.append(
            f"- Llama 'skipped' rows: prefill extrapolated quadratically plus {new_tokens} steps "
            f"extrapolated linearly from the previous context exceeded `--llama-max-seconds` "
            f"({args.llama_max_seconds:.0f} s)."
        )
    text = C.close_report(header, body, summary, notes, total_s)

    if not args.no_write:
        md, png = C.result_paths(args.name or NAME, args.quick)
        C.write_markdown(md, "Decode (greedy generate): Ringan vs Llama", header, text)
        s_ms, s_pre = {}, {}
        for m in models:
            lab = C.LABELS[m]
            got = [results[m][c] for c in contexts]
            s_ms[lab] = (contexts, [r.get("per_token_ms") for r in got])
            s_pre[lab] = (contexts, [r.get("prefill_first_token_s") for r in got])
        C.loglog_plot(
            png,
            [
                {"series": s_ms, "xlabel": "context tokens", "ylabel": "ms per new token", "title": "decode step"},
                {"series": s_pre, "xlabel": "context tokens", "ylabel": "seconds", "title": "prefill + first token"},
            ],
            f"Greedy generate, batch 1, fp32, {args.threads} thread(s)",
        )
        C.log(f"wrote {md} and {png}")


if __name__ == "__main__":
    main()
