"""Where Ringan's CPU time goes: torch.profiler tables for prefill, the decode step and a training step
(vs Llama), plus a threads 1 vs 2 comparison of prefill and decode.

Forward regions are labelled from outside the model (forward hooks and wrapped module-level functions of
`ringan.modeling.modeling_ringan`), so nothing in `ringan/` is edited. Each section runs in a fresh process.

    python benchmarks/profile_ringan.py                    # 16k prefill, decode, 2x2048 training, threads 1 vs 2
    python benchmarks/profile_ringan.py --quick
"""

from __future__ import annotations

import time
from pathlib import Path

import common as C

NAME = "profile"
BENCH_DIR = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------ child side


def label_regions(model) -> None:
    """Wrap Ringan's modules and kernels in `record_function` ranges (forward only)."""
    import torch
    from torch import nn

    import ringan.modeling.mixer_delta as md
    import ringan.modeling.mixer_linear as ml

    def wrap_fn(name: str, fn):
        def wrapped(*a, **k):
            with torch.profiler.record_function(name):
                return fn(*a, **k)

        return wrapped

    patches = [(ml, "chunk_linear_attention"), (ml, "recurrent_linear_attention_step"), (ml, "apply_rotary")]
    patches += [(md, "chunk_delta_rule"), (md, "recurrent_delta_rule_step"), (md, "apply_rotary")]
    for module, fn_name in patches:
        original = getattr(module, fn_name)
        if not getattr(original, "_bench_wrapped", False):
            w = wrap_fn(f"R.{fn_name}", original)
            w._bench_wrapped = True
            setattr(module, fn_name, w)

    def hook(module, name):
        def pre(mod, args):
            rf = torch.profiler.record_function(name)
            rf.__enter__()
            mod._bench_rf = getattr(mod, "_bench_rf", []) + [rf]

        def post(mod, args, out):
            mod._bench_rf.pop().__exit__(None, None, None)

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    for name, mod in model.named_modules():
        kind = type(mod).__name__
        if kind == "RinganAttention":
            hook(mod, "R.attention (whole)")
        elif kind == "RinganMLP":
            hook(mod, "R.mlp")
        elif kind == "RinganRMSNorm":
            hook(mod, "R.out_norm (per head)" if name.endswith("out_norm") else "R.rmsnorm")
        elif kind == "RinganRotaryEmbedding":
            hook(mod, "R.rotary angles (cos/sin)")
        elif isinstance(mod, nn.Embedding):
            hook(mod, "R.embedding")
        elif isinstance(mod, nn.Linear) and name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")):
            hook(mod, "R.attention q/k/v/o proj")
        elif isinstance(mod, nn.Linear) and name == "lm_head":
            hook(mod, "R.lm_head")


def prof_tables(prof, wall_s: float, top: int, regions: bool = True) -> dict:
    """Top ops by self CPU time, and the labelled regions (inclusive CPU time)."""
    events = prof.key_averages()
    ops = [e for e in events if not e.key.startswith(("R.", "B.", "ProfilerStep"))]
    total_self = sum(e.self_cpu_time_total for e in ops) or 1
    ops.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    top_rows = [
        [
            e.key,
            e.count,
            e.self_cpu_time_total / 1000,
            f"{100 * e.self_cpu_time_total / total_self:.1f}%",
            e.cpu_time_total / 1000,
        ]
        for e in ops[:top]
    ]
    reg = [e for e in events if e.key.startswith(("R.", "B."))]
    reg.sort(key=lambda e: e.cpu_time_total, reverse=True)
    reg_rows = (
        [
            [e.key, e.count, e.cpu_time_total / 1000, f"{100 * e.cpu_time_total / 1000 / (wall_s * 1000):.1f}%"]
            for e in reg
        ]
        if regions
        else []
    )
    return {"top": top_rows, "regions": reg_rows, "total_self_ms": total_self / 1000, "n_ops": len(ops)}


def job_prefill_profile(job: dict) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    model = C.build_model("ringan")
    ids = C.random_ids(1, job["length"])
    with torch.no_grad():
        model(ids[:, :4096], logits_to_keep=1)  # warm-up
        t0 = time.perf_counter()
        model(ids, logits_to_keep=1)
        plain_s = time.perf_counter() - t0
        label_regions(model)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            model(ids, logits_to_keep=1)
            prof_s = time.perf_counter() - t0
    return {"plain_s": plain_s, "profiled_s": prof_s, **prof_tables(prof, prof_s, job["top"])}


def job_decode_profile(job: dict) -> dict:
    """(a) the model's own decode step in a manual greedy loop; (b) the same steps through generate."""
    import torch
    from bench_decode import generate_timed
    from torch.profiler import ProfilerActivity, profile

    model = C.build_model("ringan")
    n = job["new_tokens"]
    ids = C.random_ids(1, job["context"])

    def manual_loop():
        out = model(ids, use_cache=True, logits_to_keep=1)
        cache, tok = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
        t0 = time.perf_counter()
        for _ in range(n):
            out = model(tok, cache=cache, use_cache=True, logits_to_keep=1)
            cache, tok = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
        return (time.perf_counter() - t0) / n

    with torch.no_grad():
        manual_loop()
        generate_timed(model, 64, 8, seed=7)
        # plain timings, alternated twice (noise), before any hook is installed
        manual_ms = min(manual_loop() for _ in range(2)) * 1000
        gen_ms = min(generate_timed(model, job["context"], n)["per_token_ms"] for _ in range(2))
        label_regions(model)
        out = model(ids, use_cache=True, logits_to_keep=1)
        cache, tok = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
        with profile(activities=[ProfilerActivity.CPU]) as prof_step:
            t0 = time.perf_counter()
            for _ in range(n):
                out = model(tok, cache=cache, use_cache=True, logits_to_keep=1)
                cache, tok = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
            step_s = time.perf_counter() - t0
        # generate after a 16-token context: the profile is almost all decode steps
        with profile(activities=[ProfilerActivity.CPU]) as prof_gen:
            t0 = time.perf_counter()
            generate_timed(model, 16, n)
            gen_s = time.perf_counter() - t0
    return {
        "manual_step_ms": manual_ms,
        "generate_step_ms": gen_ms,
        "step": prof_tables(prof_step, step_s, job["top"]),
        "step_profiled_ms": 1000 * step_s / n,
        "generate": prof_tables(prof_gen, gen_s, job["top"]),
        "generate_profiled_ms": 1000 * gen_s / (n + 1),
    }


def job_train_profile(job: dict) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    model = C.build_model(job["model"], train=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = C.random_ids(job["batch"], job["length"])

    def step():
        with record_function("B.forward (incl. loss)"):
            loss = model(input_ids=ids, labels=ids).loss
        with record_function("B.backward"):
            loss.backward()
        with record_function("B.optimizer step + zero_grad"):
            opt.step()
            opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    step()
    plain_s = time.perf_counter() - t0
    if job["model"] == "ringan":
        label_regions(model)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        step()
        prof_s = time.perf_counter() - t0
    return {"plain_s": plain_s, "profiled_s": prof_s, **prof_tables(prof, prof_s, job["top"])}


# ------------------------------------------------------------------------------------------ parent side

OP_HEADERS = ["op", "calls", "self CPU ms", "% of self total", "total CPU ms"]
REGION_HEADERS = ["region (inclusive)", "calls", "CPU ms", "% of profiled wall"]


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--prefill-length", type=int, default=None, help="default 16384 (quick 4608)")
    p.add_argument("--decode-context", type=int, default=None, help="default 1024 (quick 256)")
    p.add_argument("--new-tokens", type=int, default=None, help="decode steps profiled (default 64, quick 16)")
    p.add_argument("--train-shape", default=None, help="BxT, default 2x2048 (quick 1x512)")
    p.add_argument("--thread-counts", default="1,2", help="threads compared for prefill and decode (empty = skip)")
    p.add_argument("--thread-length", type=int, default=None, help="default 16384 (quick 4608)")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    if args.worker:
        return C.worker_main(
            args, {"prefill": job_prefill_profile, "decode": job_decode_profile, "train": job_train_profile}
        )
    C.apply_common_args(args)

    q = args.quick
    plen = args.prefill_length or (4608 if q else 16384)
    dctx = args.decode_context or (256 if q else 1024)
    ntok = args.new_tokens or (16 if q else 64)
    tb, tt = (int(x) for x in (args.train_shape or ("1x512" if q else "2x2048")).lower().split("x"))
    tlen = args.thread_length or (4608 if q else 16384)
    header = C.header_lines(args.threads)
    script = Path(__file__).resolve()
    t_start = time.perf_counter()
    out = [
        C.models_line(),
        "",
        "Profiles: `torch.profiler` (CPU activity), one fresh process per section, after warm-up. 'self CPU' = "
        "time inside the op itself; regions `R.*` are labels put around Ringan's modules and kernels from "
        "outside (forward only; inclusive, nested: `R.attention (whole)` contains the proj/rotary/kernel rows); "
        "`B.*` split a training step. Profiling adds overhead per op, so small-op-heavy code looks slower "
        "than it is: compare the plain and profiled times given with each section.",
        "",
    ]

    def emit(title: str, r: dict, notes: list[str]) -> None:
        out.extend([f"## {title}", ""] + notes + [""])
        if "error" in r:
            out.extend([f"ERROR: {r['error']}", ""])
            return
        out.extend([C.markdown_table(OP_HEADERS, r["top"]), ""])
        if r.get("regions"):
            out.extend([C.markdown_table(REGION_HEADERS, r["regions"]), ""])

    C.log(f"profile prefill {plen} ...")
    r = C.run_job(script, {"kind": "prefill", "length": plen, "top": args.top}, args.threads)
    emit(
        f"Ringan prefill, {C.k_label(plen)} tokens, `logits_to_keep=1`, no grad",
        r,
        []
        if "error" in r
        else [f"Plain {r['plain_s']:.3f} s, profiled {r['profiled_s']:.3f} s; {r['n_ops']} distinct ops."],
    )

    C.log(f"profile decode after {dctx} ...")
    r = C.run_job(script, {"kind": "decode", "context": dctx, "new_tokens": ntok, "top": args.top}, args.threads)
    if "error" in r:
        emit("Ringan decode", r, [])
    else:
        emit(
            f"Ringan decode step: manual greedy loop, {ntok} steps after a {C.k_label(dctx)} context",
            r["step"],
            [
                f"Plain: model step (manual loop) **{r['manual_step_ms']:.2f} ms/token**; through `generate` "
                f"**{r['generate_step_ms']:.2f} ms/token** → generate's own per-step overhead ≈ "
                f"{r['generate_step_ms'] - r['manual_step_ms']:.2f} ms. Profiled: {r['step_profiled_ms']:.2f} ms/step."
            ],
        )
        emit(
            f"Ringan decode through `generate` ({ntok + 1} tokens after a 16-token context)",
            r["generate"],
            [f"Profiled: {r['generate_profiled_ms']:.2f} ms per generated token."],
        )

    train = {}
    for m in ("ringan", "llama"):
        C.log(f"profile train {m} {tb}x{tt} ...")
        train[m] = r = C.run_job(
            script, {"kind": "train", "model": m, "batch": tb, "length": tt, "top": args.top}, args.threads
        )
        emit(
            f"{C.LABELS[m]} training step {tb}×{tt} (fwd+bwd+AdamW)",
            r,
            []
            if "error" in r
            else [
                f"Plain {r['plain_s']:.3f} s/step ({tb * tt / r['plain_s']:,.0f} tok/s), "
                f"profiled {r['profiled_s']:.3f} s."
            ],
        )
    if all("plain_s" in train[m] for m in train):
        out.extend(
            [
                f"Ringan/Llama training step time (plain, this run): "
                f"{train['ringan']['plain_s'] / train['llama']['plain_s']:.2f}",
                "",
            ]
        )

    counts = [int(x) for x in args.thread_counts.split(",") if x.strip()]
    if counts:
        C.log("threads comparison ...")
        rows = []
        order = counts + counts  # alternate, twice, to spread the machine's noise over both
        pre = {c: [] for c in counts}
        dec = {c: [] for c in counts}
        for c in order:
            rp = C.run_job(BENCH_DIR / "bench_prefill.py", {"kind": "prefill", "model": "ringan", "length": tlen}, c)
            rd = C.run_job(
                BENCH_DIR / "bench_decode.py",
                {"kind": "decode", "model": "ringan", "context": tlen, "new_tokens": ntok},
                c,
            )
            pre[c].append(rp.get("best_s"))
            dec[c].append(rd.get("per_token_ms"))
            C.log(
                f"  threads {c}: prefill {rp.get('best_s', rp.get('error'))} s, "
                f"decode {rd.get('per_token_ms', rd.get('error'))} ms/token"
            )
        for c in counts:
            bp = min(x for x in pre[c] if x is not None) if any(pre[c]) else None
            bd = min(x for x in dec[c] if x is not None) if any(dec[c]) else None
            rows.append([c, bp, ", ".join(C.fmt(x) for x in pre[c]), bd, ", ".join(C.fmt(x) for x in dec[c])])
        out.extend(
            [
                f"## Ringan: threads {' vs '.join(map(str, counts))} at {C.k_label(tlen)}",
                "",
                f"Fresh process per run, order {order} (alternated to share the machine's noise). Prefill = "
                f"`bench_prefill` job (best of up to 3 in-process runs); decode = `bench_decode` job "
                f"(generate, {ntok} steps after a {C.k_label(tlen)} context).",
                "",
                C.markdown_table(
                    [
                        "threads",
                        "prefill s (best)",
                        "prefill s (each run)",
                        "decode ms/token (best)",
                        "decode ms/token (each run)",
                    ],
                    rows,
                ),
                "",
            ]
        )
    out.append(f"Total wall time of this run: {time.perf_counter() - t_start:.0f} s.")
    text = "\n".join(out)
    print("\n".join(header) + "\n\n" + text)
    if not args.no_write:
        md, _ = C.result_paths(args.name or NAME, q)
        C.write_markdown(md, "Profile: where Ringan's time goes", header, text)
        C.log(f"wrote {md}")


if __name__ == "__main__":
    main()
