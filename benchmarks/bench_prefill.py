"""Prefill speed and peak memory of Ringan vs a same-size Llama (SDPA), batch 1, no grad, logits_to_keep=1.

Each (model, length) runs in a fresh process. Also checks, at ``--check-length``, that Ringan's chunked,
segmented prefill gives the same final logits as feeding the tokens one at a time through the cache.

    python benchmarks/bench_prefill.py                 # 1k .. 128k, both models, 1 thread
    python benchmarks/bench_prefill.py --quick         # smoke run
    python benchmarks/bench_prefill.py --check-length 16384
"""

from __future__ import annotations

import time
from pathlib import Path

import common as C

NAME = "prefill"
DEFAULT_LENGTHS = [1024, 4096, 16384, 32768, 65536, 131072]
QUICK_LENGTHS = [512, 4608]  # 4608 > prefill_segment_size: the segmented path runs
QUICK_CHECK = 4160  # crosses one segment boundary and ends inside a chunk


# ------------------------------------------------------------------------------------------ child side


def job_prefill(job: dict) -> dict:
    import torch

    model = C.build_model(job["model"])
    length = job["length"]
    with torch.no_grad():
        warm = C.random_ids(1, 256, seed=7)
        for _ in range(2):
            model(warm, logits_to_keep=1)
        loaded = C.rss_mb()
        ids = C.random_ids(1, length)
        t = C.timed(lambda: model(ids, logits_to_keep=1), min_time=job.get("min_time", 1.0), max_reps=3)
    return {**t, **C.count_params(model), **C.memory_report(loaded)}


def job_check(job: dict) -> dict:
    """Chunked (segmented) prefill's last logits vs the token-by-token recurrent path."""
    import torch

    model = C.build_model("ringan")
    length = job["length"]
    ids = C.random_ids(1, length)
    with torch.no_grad():
        t0 = time.perf_counter()
        chunked = model(ids, logits_to_keep=1).logits[0, -1].double()
        chunked_s = time.perf_counter() - t0
        cache = None
        t0 = time.perf_counter()
        for t in range(length):
            out = model(ids[:, t : t + 1], cache=cache, use_cache=True, logits_to_keep=1)
            cache = out.cache
        loop_s = time.perf_counter() - t0
        stepwise = out.logits[0, -1].double()
    diff = chunked - stepwise
    return {
        "rel_err_l2": (diff.norm() / stepwise.norm()).item(),
        "rel_err_max": (diff.abs().max() / stepwise.abs().max()).item(),
        "argmax_equal": bool(chunked.argmax() == stepwise.argmax()),
        "chunked_s": chunked_s,
        "loop_s": loop_s,
        "seen_tokens": int(cache.seen_tokens[0]),
    }


# ------------------------------------------------------------------------------------------ parent side


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--lengths", default=None, help="comma-separated prompt lengths (k = 1024); default 1k..128k")
    p.add_argument(
        "--llama-max-seconds",
        type=float,
        default=600.0,
        help="skip Llama at a length whose time, extrapolated quadratically from the previous "
        "length, would exceed this",
    )
    p.add_argument(
        "--check-length",
        type=str,
        default=None,
        help="length of the chunked vs token-by-token check (default 131072, quick 4160; 0 = skip)",
    )
    args = p.parse_args()
    if args.worker:
        return C.worker_main(args, {"prefill": job_prefill, "check": job_check})
    C.apply_common_args(args)

    models = C.parse_models(args.models)
    lengths = C.parse_sizes(args.lengths) or (QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS)
    check_len = C.parse_sizes(args.check_length)[0] if args.check_length else (QUICK_CHECK if args.quick else 131072)
    header = C.header_lines(args.threads)
    script = Path(__file__).resolve()
    t_start = time.perf_counter()

    results: dict[str, dict[int, dict]] = {m: {} for m in models}
    llama_prev: tuple[int, float] | None = None  # (length, seconds or estimate)
    for length in lengths:
        for model in models:
            if model == "llama" and llama_prev is not None:
                est = llama_prev[1] * (length / llama_prev[0]) ** 2
                if est > args.llama_max_seconds:
                    results[model][length] = {"skipped": f"skipped: est. {est:,.0f} s > {args.llama_max_seconds:.0f} s"}
                    llama_prev = (length, est)
                    C.log(f"{model} {length}: {results[model][length]['skipped']}")
                    continue
            C.log(f"{model} prefill {length} ...")
            timeout = None if model == "ringan" else 3 * args.llama_max_seconds + 300
            r = C.run_job(script, {"kind": "prefill", "model": model, "length": length}, args.threads, timeout)
            results[model][length] = r
            if "error" in r:
                C.log(f"  ERROR {r['error']}")
                if model == "llama":
                    llama_prev = (length, float("inf"))
                continue
            C.log(
                f"  {r['best_s']:.3f} s (x{r['reps']}), peak {r['peak_rss_mb']:.0f} MiB, "
                f"loaded {r['loaded_rss_mb']:.0f} MiB"
            )
            if model == "llama":
                llama_prev = (length, r["best_s"])

    check = None
    if check_len and "ringan" in models:
        C.log(f"check: chunked vs token-by-token at {check_len} tokens ...")
        check = C.run_job(script, {"kind": "check", "length": check_len}, args.threads)
        C.log(f"  {check}")
    total_s = time.perf_counter() - t_start

    # -------------------------------------------------------------------------------------- table
    headers = ["length"]
    for m in models:
        lab = C.LABELS[m]
        headers += [f"{lab} s", f"{lab} tok/s", f"{lab} peak RSS MiB", f"{lab} peak above loaded MiB"]
    if len(models) == 2:
        headers.append("time Llama/Ringan")
    rows, notes = [], []
    for length in lengths:
        row = [C.k_label(length)]
        secs = {}
        for m in models:
            r = results[m][length]
            if "skipped" in r or "error" in r:
                row += [r.get("skipped") or "error", None, None, None]
                if "error" in r:
                    notes.append(f"{C.LABELS[m]} at {length}: {r['error']}")
                continue
            secs[m] = r["best_s"]
            flag = " (!)" if r["peak_inherited"] else ""
            row += [r["best_s"], length / r["best_s"], C.fmt(r["peak_rss_mb"]) + flag, r["peak_above_loaded_mb"]]
        if len(models) == 2:
            row.append(secs["llama"] / secs["ringan"] if len(secs) == 2 else None)
        rows.append(row)

    body = [
        C.models_line(),
        "",
        "Prefill: `model(ids, logits_to_keep=1)` under `torch.no_grad()`, batch 1, default "
        "`use_cache` (both models also build their cache). Time = best of up to 3 runs in one fresh process "
        "(1 run when it takes over 1 s), after 2 warm-up calls at 256 tokens. Peak RSS = `ru_maxrss` of that "
        "process; 'above loaded' subtracts the RSS after building the model and warming up.",
        "",
        C.markdown_table(headers, rows),
        "",
    ]
    summary = []
    rg = results.get("ringan", {})
    ok = {L: r for L, r in rg.items() if "best_s" in r}
    if 4096 in ok and 131072 in ok:
        frac = (131072 / ok[131072]["best_s"]) / (4096 / ok[4096]["best_s"])
        summary.append(f"- Ringan tokens/s at 128k as a fraction of its tokens/s at 4k: **{frac:.2f}**")
    if ok:
        L0 = min(ok)
        summary.append(f"- Ringan loaded-model RSS: {ok[L0]['loaded_rss_mb']:.0f} MiB; parameters {ok[L0]['params']:,}")
    lg = {L: r for L, r in results.get("llama", {}).items() if "best_s" in r}
    if lg:
        L0 = min(lg)
        summary.append(f"- Llama loaded-model RSS: {lg[L0]['loaded_rss_mb']:.0f} MiB; parameters {lg[L0]['params']:,}")
    if any("skipped" in r for r in results.get("llama", {}).values()):
        summary.append(
            f"- Llama 'skipped' rows: its time extrapolated quadratically from the previous length "
            f"exceeded `--llama-max-seconds` ({args.llama_max_seconds:.0f} s)."
        )
    if any(r.get("peak_inherited") for d in results.values() for r in d.values()):
        summary.append("- (!) ru_maxrss exceeded the process's own VmHWM: the peak includes the parent's.")
    if check is not None:
        if "error" in check:
            summary.append(f"- Check at {check_len}: ERROR {check['error']}")
        else:
            summary.append("")
            summary.append(
                C.markdown_table(
                    [
                        "check length",
                        "rel. error (L2)",
                        "rel. error (max abs)",
                        "same argmax",
                        "chunked prefill s",
                        "token-by-token loop s",
                        "loop tok/s",
                    ],
                    [
                        [
                            C.k_label(check_len),
                            f"{check['rel_err_l2']:.2e}",
                            f"{check['rel_err_max']:.2e}",
                            "yes" if check["argmax_equal"] else "NO",
                            check["chunked_s"],
                            check["loop_s"],
                            check_len / check["loop_s"],
                        ]
                    ],
                )
            )
            summary.append("")
            summary.append(
                f"Check: Ringan's final logits from the chunked, segmented prefill vs feeding the "
                f"{check_len} tokens one at a time (`model(ids[:, t:t+1], cache=cache, use_cache=True)`); "
                f"the token-by-token loop took {check['loop_s']:.1f} s."
            )
    text = C.close_report(header, body, summary, notes, total_s)

    if not args.no_write:
        md, png = C.result_paths(args.name or NAME, args.quick)
        C.write_markdown(md, "Prefill: Ringan vs Llama", header, text)
        series_t, series_m, series_r = {}, {}, {}
        for m in models:
            lab = C.LABELS[m]
            get = [results[m][L] for L in lengths]
            series_t[lab] = (lengths, [r.get("best_s") for r in get])
            series_r[lab] = (lengths, [L / r["best_s"] if "best_s" in r else None for L, r in zip(lengths, get)])
            series_m[lab] = (lengths, [max(r["peak_above_loaded_mb"], 1e-3) if "best_s" in r else None for r in get])
        C.loglog_plot(
            png,
            [
                {"series": series_t, "xlabel": "prompt tokens", "ylabel": "seconds", "title": "prefill time"},
                {"series": series_r, "xlabel": "prompt tokens", "ylabel": "tokens/s", "title": "prefill throughput"},
                {
                    "series": series_m,
                    "xlabel": "prompt tokens",
                    "ylabel": "MiB",
                    "title": "peak RSS above loaded model",
                },
            ],
            f"Prefill, batch 1, fp32, {args.threads} thread(s)",
        )
        C.log(f"wrote {md} and {png}")


if __name__ == "__main__":
    main()
