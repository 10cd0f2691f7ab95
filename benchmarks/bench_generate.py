"""Generation speed and memory: `model.generate` vs the lean decode loop (`ringan.decoding`, torch and ONNX
Runtime back ends), fp32 / int8 / int4 weights, batch 1 and batch 32, after contexts of 1k / 16k / 128k; Llama's
`generate` in the same table. Every measurement runs in a fresh process.

    python benchmarks/bench_generate.py --model runs/base-fp32            # a saved fp32 model folder
    python benchmarks/bench_generate.py --quick                           # a random default-size model, short

Also: peak RSS after loading and after 1,000 generated tokens (above the `import torch` floor), greedy tokens of
the lean loop against `model.generate` over 200 tokens, int8/int4 (torch and ONNX) agreement with fp32, and an
ONNX Runtime profile of the int8 decode step.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import common as C

NAME = "generate"
DEFAULT_CONTEXTS = [1024, 16384, 131072]
QUICK_CONTEXTS = [256, 2048]


# ------------------------------------------------------------------------------------------ child side


def _load(job: dict):
    import torch
    from transformers import AutoModelForCausalLM

    import ringan  # noqa: F401

    if job["runtime"] == "llama-generate":
        return C.build_model("llama").eval()
    if job.get("folder"):
        return AutoModelForCausalLM.from_pretrained(job["folder"]).eval()
    torch.manual_seed(0)
    return C.build_model("ringan").eval()


def _stamps_generate(model, ids, new_tokens: int) -> list[float]:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Stamp(StoppingCriteria):
        def __init__(self):
            self.times: list[float] = []

        def __call__(self, input_ids, scores, **kwargs):
            self.times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    stamp = Stamp()
    model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens + 1,
        min_new_tokens=new_tokens + 1,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
        stopping_criteria=StoppingCriteriaList([stamp]),
    )
    return stamp.times


def _stamps_lean(decoder, ids, new_tokens: int) -> list[float]:
    from ringan.decoding import Sampling

    times: list[float] = []
    decoder.generate(
        ids.tolist(),
        new_tokens + 1,
        Sampling(greedy=True),
        on_step=lambda rows, tokens: times.append(time.perf_counter()),
    )
    return times


def job_speed(job: dict) -> dict:
    import torch

    from ringan.decoding import Decoder, OnnxStep, TorchStep

    floor = C.rss_mb()
    model = _load(job)
    runtime = job["runtime"]
    decoder = None
    if runtime == "lean-torch":
        decoder = Decoder(TorchStep(model), stop_ids=[])
    elif runtime == "onnx":
        decoder = Decoder(OnnxStep(job["onnx_folder"], threads=job["threads"]), stop_ids=[])
        model = None
    loaded = C.rss_mb()
    ids = C.random_ids(job["batch"], job["context"], seed=1)
    warm = C.random_ids(job["batch"], 64, seed=7)
    with torch.inference_mode():
        if decoder is None:
            _stamps_generate(model, warm, 4)
            stamps = _stamps_generate(model, ids, job["new_tokens"])
        else:
            _stamps_lean(decoder, warm, 4)
            stamps = _stamps_lean(decoder, ids, job["new_tokens"])
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    per_step = (stamps[-1] - stamps[0]) / job["new_tokens"]
    return {
        "per_step_ms": 1000 * per_step,
        "median_step_ms": 1000 * sorted(steps)[len(steps) // 2],
        "tokens_per_s": job["batch"] / per_step,
        "prefill_s": stamps[0],
        "rss_floor_mb": floor,
        "rss_loaded_mb": loaded,
        "peak_rss_mb": C.peak_rss_mb(),
    }


def job_memory(job: dict) -> dict:
    """RSS after loading and after 1,000 generated tokens (lean torch loop, batch 1), above the torch floor."""
    import torch

    from ringan.decoding import Decoder, Sampling, TorchStep

    floor = C.rss_mb()
    model = _load(job)
    loaded = C.rss_mb()
    decoder = Decoder(TorchStep(model), stop_ids=[])
    with torch.inference_mode():
        decoder.generate([C.random_ids(1, 1024, seed=3)[0].tolist()], 1000, Sampling(greedy=True))
    return {
        "floor_mb": floor,
        "after_load_mb": loaded - floor,
        "after_1000_mb": C.rss_mb() - floor,
        "peak_mb": C.peak_rss_mb() - floor,
    }


def job_agreement(job: dict) -> dict:
    """Greedy tokens: the lean loop vs `model.generate` and vs the general (unfused) forward (200 tokens), and each
    quantized format vs fp32."""
    import torch
    from transformers import AutoModelForCausalLM

    from ringan.decoding import Decoder, Sampling, TorchStep

    prompts = [C.random_ids(1, 64, seed=s)[0].tolist() for s in range(job["prompts"])]
    reference = AutoModelForCausalLM.from_pretrained(job["folders"]["fp32"]).eval()
    out: dict = {}
    with torch.inference_mode():
        lean = Decoder(TorchStep(reference), stop_ids=[]).generate(prompts, 200, Sampling(greedy=True))
        same = 0
        for p, tokens in zip(prompts, lean):
            generated = reference.generate(
                torch.tensor([p]), max_new_tokens=200, do_sample=False, eos_token_id=None, pad_token_id=0
            )
            same += int(generated[0, len(p) :].tolist() == tokens)
        out["lean_equals_generate"] = f"{same}/{len(prompts)}"
    # both of those run the fused one-token step; the general forward (which runs under gradients) is the reference
    same = 0
    for p, tokens in zip(prompts, lean):
        with torch.enable_grad():
            seq = torch.tensor([p])
            step_out = reference(seq, use_cache=True, logits_to_keep=1)
            cache, general = step_out.cache, []
            for _ in range(200):
                general.append(int(step_out.logits[0, -1].argmax()))
                step_out = reference(torch.tensor([[general[-1]]]), cache=cache, use_cache=True)
        same += int(general == tokens)
    out["fused_equals_general_forward"] = f"{same}/{len(prompts)}"
    with torch.inference_mode():
        for name, folder in job["folders"].items():
            if name == "fp32":
                continue
            quantized = AutoModelForCausalLM.from_pretrained(folder).eval()
            got = Decoder(TorchStep(quantized), stop_ids=[]).generate(prompts, 200, Sampling(greedy=True))
            agree = sum(a == b for x, y in zip(lean, got) for a, b in zip(x, y))
            out[f"{name}_greedy_agreement"] = agree / sum(len(x) for x in lean)
            # greedy runs part at their first different token; per position, on fp32's own continuation:
            same = total = 0
            for p, tokens in zip(prompts, lean):
                logits = quantized(torch.tensor([p + tokens[:-1]])).logits[0, len(p) - 1 :]
                same += int((logits.argmax(-1) == torch.tensor(tokens)).sum())
                total += len(tokens)
            out[f"{name}_next_token_agreement_on_fp32_text"] = same / total
    from ringan.conversion.onnx_runtime import OnnxRingan

    for name, folder in job.get("onnx_folders", {}).items():  # the ONNX graphs, per position, on the same text
        runner, same, total = OnnxRingan(folder, threads=1), 0, 0
        for p, tokens in zip(prompts, lean):
            logits, state = runner.feed(p, runner.initial_state())
            for token in tokens:
                same += int(int(logits.argmax()) == token)
                logits, state = runner.feed([token], state)
            total += len(tokens)
        out[f"{name}_next_token_agreement_on_fp32_text"] = same / total
    return out


def job_onnx_profile(job: dict) -> dict:
    """Where an ONNX decode step's time goes: ONNX Runtime's own profiler over `steps` steps of the decode graph
    (its profile file goes to a temporary folder and is deleted), node time summed per operator type."""
    import onnxruntime as ort

    from ringan.conversion.onnx_runtime import OnnxRingan

    folder = Path(job["onnx_folder"])
    runner = OnnxRingan(folder, threads=job["threads"])
    steps, warm = job["steps"], 50
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = job["threads"]
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        logits, state = runner.feed(C.random_ids(1, 64, seed=2)[0].tolist(), runner.initial_state())
        session = ort.InferenceSession(str(folder / "decode.onnx"), options, providers=["CPUExecutionProvider"])
        runner.decode_session = session  # one-token feeds now run the profiled session
        for _ in range(warm + steps):
            logits, state = runner.feed([int(logits.argmax())], state)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted(e["dur"] for e in events if e.get("name") == "model_run")[warm:]
    per_op: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op.setdefault(e["args"]["op_name"], []).append(e["dur"])
    total_steps = warm + steps
    nodes_us = sum(sum(v) for v in per_op.values()) / total_steps
    rows = [
        [
            op,
            round(len(v) / total_steps, 1),
            round(sum(v) / total_steps, 1),
            f"{100 * sum(v) / total_steps / nodes_us:.1f}%",
        ]
        for op, v in sorted(per_op.items(), key=lambda kv: -sum(kv[1]))
    ]
    return {"model_run_us_median": runs[len(runs) // 2], "node_us_per_step": nodes_us, "rows": rows}


# ------------------------------------------------------------------------------------------ parent side


def prepare_formats(model_folder: str | None, work: Path) -> dict[str, str]:
    """fp32 / int8 / int4 folders (and ONNX exports) of the model under test."""
    import torch

    from ringan.conversion import export_onnx, quantize_folder

    fp32 = work / "fp32"
    if model_folder:
        fp32 = Path(model_folder)
    else:
        torch.manual_seed(0)
        C.build_model("ringan").save_pretrained(str(fp32))
    folders = {"fp32": str(fp32)}
    for bits in (8, 4):
        quantize_folder(fp32, work / f"int{bits}", bits=bits)
        folders[f"int{bits}"] = str(work / f"int{bits}")
    for quant in (None, "int8", "int4"):
        export_onnx(fp32, work / f"onnx-{quant or 'fp32'}", quant)
        folders[f"onnx-{quant or 'fp32'}"] = str(work / f"onnx-{quant or 'fp32'}")
    return folders


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a saved fp32 Ringan folder (default: a random default-size model)")
    p.add_argument("--contexts", default=None, help="comma-separated context lengths (k = 1024)")
    p.add_argument("--new-tokens", type=int, default=None, help="timed steps at batch 1 (default 200; quick 32)")
    p.add_argument("--batch", default="32", help="comma-separated batch sizes for the batched rows")
    p.add_argument("--batch-threads", type=int, default=2, help="threads for the batched rows")
    p.add_argument("--skip-llama", action="store_true")
    args = p.parse_args()
    if args.worker:
        return C.worker_main(
            args,
            {"speed": job_speed, "memory": job_memory, "agreement": job_agreement, "onnx_profile": job_onnx_profile},
        )
    C.apply_common_args(args)
    contexts = C.parse_sizes(args.contexts) or (QUICK_CONTEXTS if args.quick else DEFAULT_CONTEXTS)
    new_tokens = args.new_tokens or (32 if args.quick else 200)
    script = Path(__file__).resolve()
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="ringan-bench-generate-"))
    C.log("preparing int8/int4 folders and ONNX exports ...")
    folders = prepare_formats(args.model, work)
    header = C.header_lines(
        args.threads, {"model": args.model or "random default-size Ringan", "new tokens": str(new_tokens)}
    )

    plan = []
    for ctx in contexts:
        for weights in ("fp32", "int8", "int4"):
            plan.append(("generate", weights, 1, ctx))
            plan.append(("lean-torch", weights, 1, ctx))
        for weights in ("fp32", "int8", "int4"):
            plan.append(("onnx", weights, 1, ctx))
        for batch in (int(b) for b in args.batch.split(",")) if ctx <= 16384 else ():  # 128k x 32 rows: minutes
            for weights in ("fp32", "int8"):
                plan.append(("lean-torch", weights, batch, ctx))
        if not args.skip_llama and ctx <= 16384:
            plan.append(("llama-generate", "fp32", 1, ctx))
    rows = []
    for runtime, weights, batch, ctx in plan:
        threads = args.threads if batch == 1 else args.batch_threads
        steps = new_tokens if batch == 1 else max(new_tokens // 4, 8)
        job = {"kind": "speed", "runtime": runtime, "batch": batch, "context": ctx, "new_tokens": steps}
        if runtime == "onnx":
            job["onnx_folder"] = folders[f"onnx-{weights}"]
        elif runtime != "llama-generate":
            job["folder"] = folders[weights]
        C.log(f"{runtime} {weights} batch {batch} after {ctx} ...")
        r = C.run_job(script, job, threads)
        rows.append(
            [
                runtime,
                weights,
                batch,
                C.k_label(ctx),
                threads,
                r.get("per_step_ms"),
                r.get("tokens_per_s"),
                r.get("median_step_ms"),
                r.get("error"),
            ]
        )
        C.log(f"  {r.get('tokens_per_s', 0):,.0f} tok/s" if "error" not in r else f"  ERROR {r['error']}")
    memory = {
        w: C.run_job(script, {"kind": "memory", "runtime": "lean-torch", "folder": folders[w]}, args.threads)
        for w in ("fp32", "int8", "int4")
    }
    agreement = C.run_job(
        script,
        {
            "kind": "agreement",
            "folders": {k: folders[k] for k in ("fp32", "int8", "int4")},
            "onnx_folders": {k: folders[k] for k in ("onnx-fp32", "onnx-int8", "onnx-int4")},
            "prompts": 4 if args.quick else 10,
        },
        args.threads,
    )
    profile = C.run_job(
        script,
        {"kind": "onnx_profile", "onnx_folder": folders["onnx-int8"], "threads": args.threads, "steps": 300},
        args.threads,
    )
    total_s = time.perf_counter() - t_start

    speed_table = C.markdown_table(
        ["runtime", "weights", "batch", "context", "threads", "ms/step", "tokens/s", "median step ms", "note"], rows
    )
    memory_table = C.markdown_table(
        ["weights", "RSS after load (MiB above torch)", "after 1,000 tokens", "peak", "torch floor MiB"],
        [
            [w, m.get("after_load_mb"), m.get("after_1000_mb"), m.get("peak_mb"), m.get("floor_mb")]
            for w, m in memory.items()
        ],
    )
    body = [
        C.models_line(),
        "",
        "ms/step: time between consecutive new tokens (prefill excluded), after a warm-up call; tokens/s = batch / "
        "step time. `generate` = `model.generate(do_sample=False)`; `lean-torch` = `ringan.decoding.Decoder` with the "
        "model's own one-token forward (both run the fused delta-rule step, `ringan/modeling/fused_step.py`); "
        "`onnx` = the `ringan export onnx` graphs in ONNX Runtime (batch 1; the decode graph from the fused step).",
        "",
        speed_table,
        "",
        memory_table,
        "",
        "Greedy agreement: " + json.dumps(agreement),
        "",
        "Where an ONNX int8 decode step's time goes (ONNX Runtime's profiler, 300 steps after a 64-token prompt; the "
        f"profiler's own overhead included: a profiled step took {profile.get('model_run_us_median', 0):.0f} µs, "
        f"{profile.get('node_us_per_step', 0):.0f} µs of it inside operators):",
        "",
        C.markdown_table(["operator", "calls/step", "µs/step", "share of operator time"], profile.get("rows", [])),
        "",
    ]
    text = C.close_report(header, body, [], [], total_s)
    print(text)
    if not args.no_write:
        md, _ = C.result_paths(args.name or NAME, args.quick)
        C.write_markdown(md, "Generation: lean loop, ONNX Runtime and generate; fp32 / int8 / int4", header, text)
        C.log(f"wrote {md}")


if __name__ == "__main__":
    main()
