"""Size, held-out perplexity and greedy generation speed of a trained Ringan model in every format the
package makes: PyTorch fp32 / int8 / int4 (group 32 and 64) through `ringan.conversion.quantize_folder`, and
ONNX fp32 / int8 / int4 through `ringan.conversion.export_onnx`. Each row is checked against the targets of
`ringan/conversion/README.md` (int8 <= 8 MB, int4 <= 5 MB, speed >= 0.9x fp32, perplexity within 1 % for
int8 and 3 % for int4).

    ringan quickstart      # writes runs/quickstart/model and runs/quickstart/held_out.txt
    python benchmarks/bench_quantization.py runs/quickstart/model --data runs/quickstart/held_out.txt
    python benchmarks/bench_quantization.py MODEL --data HELD_OUT.txt --rounds 2 --no-onnx   # smoke run

Everything runs in this one process (the formats are compared with each other, so they share the
machine's state): the quantized and exported folders go to a temporary directory (`--keep DIR` to keep
them). See benchmarks/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common as C

NAME = "quantization"
MB = 1e6  # sizes in decimal megabytes, as in ringan/conversion/README.md
SIZE_LIMIT_MB = {8: 8.0, 4: 5.0}
PPL_LIMIT_PCT = {8: 1.0, 4: 3.0}
SPEED_MIN_RATIO = 0.9
KL_MAX_ELEMENTS = 250_000_000  # fp32 log-probs kept for the KL column (1 GB); above that the column is skipped

# (label, runtime, bits, group_size): bits None = float; group None = quantize_folder's default for the bits
PYTORCH_FORMATS = [
    ("fp32", "pytorch", None, None),
    ("int8 (per-row)", "pytorch", 8, None),
    ("int4 g32", "pytorch", 4, 32),
    ("int4 g64", "pytorch", 4, 64),
]
ONNX_FORMATS = [
    ("ONNX fp32", "onnx", None, None),
    ("ONNX int8", "onnx", 8, None),
    ("ONNX int4 (block 32)", "onnx", 4, 32),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help="a float Ringan checkpoint folder (save_pretrained output, tokenizer included)")
    p.add_argument("--data", required=True, help="held-out dialogues (.txt file or folder, read_dialogues format)")
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads (default 1)")
    p.add_argument(
        "--out",
        default=None,
        help="markdown result file (default benchmarks/results/quantization.md; "
        "quantization_quick.md when --rounds < 5)",
    )
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument(
        "--onnx",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also export and measure ONNX fp32/int8/int4 (default on)",
    )
    p.add_argument("--rounds", type=int, default=9, help="interleaved speed rounds (median; >= 5 for real numbers)")
    p.add_argument("--prompt-tokens", type=int, default=32, help="prompt length for the speed test")
    p.add_argument("--new-tokens", type=int, default=128, help="greedy tokens per generate (min = max)")
    p.add_argument("--max-length", type=int, default=1024, help="evaluation window (entry_to_examples)")
    p.add_argument("--batch-size", type=int, default=8, help="evaluate_examples batch size")
    p.add_argument("--keep", default=None, help="write the quantized/exported folders here instead of a temp dir")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.out is None:
        base = NAME if args.rounds >= 5 else f"{NAME}_quick"
        args.out = str(C.RESULTS_DIR / f"{base}.md")
    return args


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ data


def load_examples(model, tok, data: str, max_length: int):
    """Held-out entries -> `entry_to_examples` windows with the model's own topic/context ids."""
    from ringan.data import read_dialogues
    from ringan.training import entry_to_examples, model_vocabularies

    entries = read_dialogues(data)
    if not entries:
        raise SystemExit(f"{data}: no dialogue entries")
    topics, contexts = model_vocabularies(model.config)
    examples = [x for e in entries for x in entry_to_examples(e, tok, topics, contexts, max_length)]
    known = {
        "topics": sum(topics.id(e.topic) != 0 for e in entries),
        "contexts": sum(contexts.id(e.context) != 0 for e in entries),
    }
    return entries, examples, known


def conditioning_inputs(conditioning: str, example: dict) -> dict:
    """The example's topic/context in the form the model takes (`ids`, `text` or nothing), batch 1 tensors:
    the package's own collator builds them."""
    from ringan.training import DialogueCollator

    batch = DialogueCollator(conditioning=conditioning)([example])
    return {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "labels")}


def _log_probs(model, example):
    import torch

    ids = torch.tensor([example["input_ids"]])
    out = model(ids, **conditioning_inputs(model.config.conditioning, example), use_cache=False)
    return out.logits[0, :-1].float().log_softmax(-1)


def reference_log_probs(model, examples) -> list | None:
    """fp32 next-token log-probs of every example (for KL); None when they would not fit in memory."""
    import torch

    total = sum(len(x["input_ids"]) - 1 for x in examples) * model.config.vocab_size
    if total > KL_MAX_ELEMENTS:
        return None
    with torch.no_grad():
        return [_log_probs(model, x) for x in examples]


def kl_per_token(reference, candidate) -> float:
    """Mean KL(fp32 || candidate) in nats per predicted token, from lists of [T, V] log-prob tensors."""
    total, n = 0.0, 0
    for ref, q in zip(reference, candidate):
        total += float((ref.exp() * (ref - q)).sum())
        n += ref.shape[0]
    return total / max(n, 1)


def evaluate_pytorch(model, examples, batch_size, pad_token_id, reference):
    import torch

    from ringan.training import evaluate_examples

    with torch.no_grad():
        result = evaluate_examples(model, examples, batch_size, pad_token_id)
        if reference is not None:
            result["kl"] = kl_per_token(reference, [_log_probs(model, x) for x in examples])
    return result


def evaluate_onnx(runner, examples, reference, conditioning: str):
    """Exact NLL through ONNX Runtime: every window from a zero state, token by token through decode.onnx
    (the next-token log-probs of every position), with the window's topic/context."""
    import numpy as np
    import torch

    from ringan.decoding import plain_conditioning
    from ringan.training import nll_metrics

    total_nll, total_tokens, total_bytes = 0.0, 0, 0.0
    kl_total = 0.0
    for i, example in enumerate(examples):
        ids = example["input_ids"]
        runner.set_conditioning(**plain_conditioning(conditioning_inputs(conditioning, example)))
        state = runner.initial_state()
        rows = []
        for t in range(len(ids) - 1):
            logits, state = runner.feed([ids[t]], state)
            rows.append(logits)
        if not rows:
            continue
        lp = torch.from_numpy(np.stack(rows)).double().log_softmax(-1)
        targets = torch.tensor(ids[1:])
        total_nll -= float(lp.gather(1, targets[:, None]).sum())
        total_tokens += len(rows)
        total_bytes += example["n_bytes"]
        if reference is not None:
            ref = reference[i].double()
            kl_total += float((ref.exp() * (ref - lp)).sum())
    result = nll_metrics(total_nll, total_tokens, total_bytes)
    if reference is not None:
        result["kl"] = kl_total / max(total_tokens, 1)
    return result


# ------------------------------------------------------------------------------------------ speed


def speed_prompt(examples, length: int, vocab: int):
    """The first `length` tokens of the longest held-out window (and that window)."""
    import torch

    longest = max(examples, key=lambda x: len(x["input_ids"]))
    ids = longest["input_ids"][:length]
    if len(ids) < length:  # a tiny held-out file: pad with seeded random ids
        g = torch.Generator().manual_seed(0)
        ids = ids + torch.randint(3, vocab, (length - len(ids),), generator=g).tolist()
    return torch.tensor([ids]), longest


def make_runner(kind: str, obj, prompt, conditioning: dict, new_tokens: int):
    """A no-argument callable that generates `new_tokens` greedy tokens after `prompt` and returns them."""
    import torch

    if kind == "pytorch":
        from transformers import GenerationConfig

        cfg = obj.config
        # Replace the loaded instance's generation config (in memory only): a `generation_config=` argument
        # would be merged with the checkpoint's sampling defaults (do_sample, repetition_penalty 1.1, ...).
        obj.generation_config = GenerationConfig(
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            bos_token_id=cfg.bos_token_id,
            eos_token_id=cfg.eos_token_id,
            pad_token_id=cfg.pad_token_id,
        )
        mask = torch.ones_like(prompt)

        def run():
            with torch.no_grad():
                out = obj.generate(prompt, attention_mask=mask, **conditioning)
            return out[0, prompt.shape[1] :].tolist()

        return run

    from ringan.decoding import plain_conditioning

    def run():
        out = obj.generate(prompt[0], new_tokens, stop_at_eos=False, **plain_conditioning(conditioning))
        return out[prompt.shape[1] :]

    return run


def measure_speed(runners: dict, rounds: int, new_tokens: int) -> tuple[dict, dict]:
    """Interleaved rounds (the order rotates each round); one warm-up call each first (it includes a quantized
    model's one-time dequantization). Returns per label the wall and CPU tokens/s of every round, and the
    tokens of the warm-up call."""
    tokens = {}
    for label, run in runners.items():
        tokens[label] = run()
        if len(tokens[label]) != new_tokens:
            raise RuntimeError(f"{label}: generated {len(tokens[label])} tokens, expected {new_tokens}")
    labels = list(runners)
    rates = {label: {"wall": [], "cpu": []} for label in labels}
    for r in range(rounds):
        order = labels[r % len(labels) :] + labels[: r % len(labels)]
        for label in order:
            wall, cpu = time.perf_counter(), time.process_time()
            runners[label]()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rates[label]["wall"].append(new_tokens / wall)
            rates[label]["cpu"].append(new_tokens / max(cpu, 1e-9))
        log(f"speed round {r + 1}/{rounds} done")
    return rates, tokens


def common_prefix(a: list, b: list) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# ------------------------------------------------------------------------------------------ checks and output


def targets_for(label: str, bits) -> dict:
    """The README's targets that apply to a row: size (MB), |delta ppl| (%), speed ratio."""
    if label == "fp32":
        return {}
    if bits is None:  # ONNX fp32: no stated target; held to int8's tolerance and the speed floor
        return {"ppl_pct": PPL_LIMIT_PCT[8], "speed": SPEED_MIN_RATIO}
    return {"size_mb": SIZE_LIMIT_MB[bits], "ppl_pct": PPL_LIMIT_PCT[bits], "speed": SPEED_MIN_RATIO}


def verdict(row: dict, targets: dict) -> str:
    if not targets:
        return "reference"
    failed = []
    if "size_mb" in targets and row["size_mb"] > targets["size_mb"]:
        failed.append(f"size {row['size_mb']:.2f} > {targets['size_mb']:g} MB")
    if "ppl_pct" in targets and abs(row["delta_pct"]) > targets["ppl_pct"]:
        failed.append(f"ppl {row['delta_pct']:+.2f} % beyond ±{targets['ppl_pct']:g} %")
    if "speed" in targets and row.get("speed_ratio") is not None and row["speed_ratio"] < targets["speed"]:
        failed.append(f"speed {row['speed_ratio']:.2f}x < {targets['speed']:g}x")
    return "**pass**" if not failed else "**FAIL**: " + "; ".join(failed)


def target_text(targets: dict) -> str:
    if not targets:
        return "—"
    parts = []
    if "size_mb" in targets:
        parts.append(f"≤ {targets['size_mb']:g} MB")
    if "ppl_pct" in targets:
        parts.append(f"ppl ±{targets['ppl_pct']:g} %")
    if "speed" in targets:
        parts.append(f"≥ {targets['speed']:g}x")
    return ", ".join(parts)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch / onnxruntime are imported
    started = time.time()
    threads = C.set_threads(args.threads)
    machine = C.header_lines(threads)  # date and load average at start
    import torch

    import ringan
    from ringan.conversion import export_onnx, quantize_folder
    from ringan.conversion.onnx_runtime import OnnxRingan
    from ringan.conversion.quantize import folder_sizes
    from ringan.loading import load_model

    torch.manual_seed(0)
    model_dir = Path(args.model_dir)
    log(f"loading {model_dir}")
    fp32, tok = load_model(model_dir)
    fp32.eval()
    cfg = fp32.config
    if cfg.quantization:
        raise SystemExit(f"{model_dir} is already quantized ({cfg.quantization}); pass a float checkpoint")
    n_params = sum(p.numel() for p in fp32.parameters())
    entries, examples, known = load_examples(fp32, tok, args.data, args.max_length)
    n_tokens = sum(len(x["input_ids"]) - 1 for x in examples)
    n_bytes = sum(x["n_bytes"] for x in examples)
    log(f"held-out: {len(entries)} entries, {len(examples)} windows, {n_tokens} predicted tokens")

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ringan-bench-quant-"))
    work.mkdir(parents=True, exist_ok=True)
    formats = PYTORCH_FORMATS + (ONNX_FORMATS if args.onnx else [])
    rows: dict[str, dict] = {}
    loaded: dict[str, tuple[str, object]] = {}
    notes: list[str] = []
    try:
        # ---- build every format: size on disk
        for label, kind, bits, group in formats:
            row = {"label": label, "kind": kind, "bits": bits}
            if kind == "pytorch" and bits is None:
                sizes = folder_sizes(model_dir)
                loaded[label] = ("pytorch", fp32)
            elif kind == "pytorch":
                dst = work / f"int{bits}_g{group if group is not None else 'default'}"
                log(f"quantize_folder bits={bits} group={group} -> {dst}")
                t0 = time.perf_counter()
                sizes = quantize_folder(model_dir, dst, bits, group)
                row["build_s"] = time.perf_counter() - t0
                row["quantization"] = sizes["quantization"]
                model, _ = load_model(dst)
                loaded[label] = ("pytorch", model.eval())
            else:
                quantize = None if bits is None else f"int{bits}"
                dst = work / f"onnx_{quantize or 'fp32'}"
                log(f"export_onnx quantize={quantize} -> {dst}")
                t0 = time.perf_counter()
                sizes = export_onnx(model_dir, dst, quantize)
                row["build_s"] = time.perf_counter() - t0
                row["check"] = sizes["check"]["max_abs_logit_diff"]
                if sizes.get("skipped"):
                    notes.append(f"{label}: not quantized ({sizes['skipped']}); the row measures fp32 graphs.")
                loaded[label] = ("onnx", OnnxRingan(dst, threads=args.threads))
            row["files"] = sizes["files"]
            row["size_mb"] = sizes["total_bytes"] / MB
            rows[label] = row

        # ---- perplexity / bits per byte / KL on the held-out windows
        log("fp32 reference log-probs (for KL)")
        reference = reference_log_probs(fp32, examples)
        if reference is None:
            notes.append(f"KL column skipped: {n_tokens} tokens x vocab {cfg.vocab_size} is too large to keep.")
        for label, (kind, obj) in loaded.items():
            t0 = time.perf_counter()
            if kind == "pytorch":
                result = evaluate_pytorch(obj, examples, args.batch_size, tok.pad_token_id, reference)
            else:
                result = evaluate_onnx(obj, examples, reference, cfg.conditioning)
            rows[label].update(result)
            log(
                f"{label}: ppl {result['perplexity']:.3f}, bits/byte {result['bits_per_byte']:.4f} "
                f"({time.perf_counter() - t0:.1f} s)"
            )
        base = rows["fp32"]["perplexity"]
        for row in rows.values():
            row["delta_pct"] = 100 * (row["perplexity"] / base - 1)

        # ---- greedy generation speed, interleaved rounds
        prompt, window = speed_prompt(examples, args.prompt_tokens, cfg.vocab_size)
        conditioning = conditioning_inputs(cfg.conditioning, window)
        runners = {
            label: make_runner(kind, obj, prompt, conditioning, args.new_tokens)
            for label, (kind, obj) in loaded.items()
        }
        log(f"speed: {args.rounds} rounds x {len(runners)} formats x {args.new_tokens} tokens")
        rates, generated = measure_speed(runners, args.rounds, args.new_tokens)
        base_wall = statistics.median(rates["fp32"]["wall"])
        base_cpu = statistics.median(rates["fp32"]["cpu"])
        onnx_wall = statistics.median(rates["ONNX fp32"]["wall"]) if "ONNX fp32" in rates else None
        for label, r in rates.items():
            row = rows[label]
            row["tok_s"] = statistics.median(r["wall"])
            row["tok_s_best"] = max(r["wall"])
            row["speed_ratio"] = row["tok_s"] / base_wall
            row["cpu_ratio"] = statistics.median(r["cpu"]) / base_cpu
            runtime_base = base_wall if row["kind"] == "pytorch" else onnx_wall
            row["runtime_ratio"] = row["tok_s"] / runtime_base
            row["same_tokens"] = common_prefix(generated[label], generated["fp32"])
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)

    # ---- output
    for label, _kind, bits, _group in formats:
        rows[label]["targets"] = targets_for(label, bits)
        rows[label]["verdict"] = verdict(rows[label], rows[label]["targets"])
    has_kl = reference is not None
    headers = ["format", "size MB", "perplexity", "Δ ppl vs fp32"]
    headers += ["KL(fp32‖q) nats/token"] if has_kl else []
    headers += [
        "bits/byte",
        "tok/s (median)",
        "× PyTorch fp32",
        "× fp32 per CPU-s",
        "× same-runtime fp32",
        f"greedy tokens = fp32 (of {args.new_tokens})",
        "target",
        "result",
    ]
    table_rows = []
    for row in rows.values():
        cells = [row["label"], f"{row['size_mb']:.2f}", f"{row['perplexity']:.3f}"]
        cells.append(
            "reference" if row["label"] == "fp32" else f"{row['delta_pct'] + 0.0:+.2f} %".replace("-0.00", "+0.00")
        )
        if has_kl:
            cells.append("0" if row["label"] == "fp32" else f"{max(row['kl'], 0.0):.5f}")
        cells += [
            f"{row['bits_per_byte']:.4f}",
            f"{row['tok_s']:.1f}",
            f"{row['speed_ratio']:.2f}x",
            f"{row['cpu_ratio']:.2f}x",
            f"{row['runtime_ratio']:.2f}x",
            "reference" if row["label"] == "fp32" else str(row["same_tokens"]),
            target_text(row["targets"]),
            row["verdict"],
        ]
        table_rows.append(cells)
    table = C.markdown_table(headers, table_rows)

    n_pass = sum(r["verdict"] == "**pass**" for r in rows.values())
    n_checked = sum(bool(r["targets"]) for r in rows.values())
    runtime_s = time.time() - started
    config_text = (
        f"vocab {cfg.vocab_size}, hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, "
        f"{cfg.num_attention_heads} heads (head dim {cfg.head_dim}), FFN {cfg.intermediate_size} ({cfg.hidden_act}), "
        f"attention `{cfg.attention_type}` (chunk {cfg.chunk_size}), {cfg.num_topics} topic / {cfg.num_contexts} "
        f"context rows, tied head: {cfg.tie_word_embeddings}"
    )
    extra = {
        "onnxruntime": C._version("onnxruntime") if args.onnx else "not used (--no-onnx)",
        "ringan": getattr(ringan, "__version__", "?"),
        "model dir": f"`{model_dir.resolve()}`",
        "parameters": f"{n_params:,} ({n_params / 1e6:.2f}M)",
        "config": config_text,
        "held-out file": (
            f"`{Path(args.data).resolve()}`: {len(entries)} entries, {len(examples)} windows of ≤ "
            f"{args.max_length} tokens, **{n_tokens:,} predicted tokens**, {n_bytes:,.0f} bytes; "
            f"topic known to the model for {known['topics']}/{len(entries)} entries, Konteks for "
            f"{known['contexts']}/{len(entries)} (others use id 0)"
        ),
        "speed test": (
            f"greedy generate, {args.prompt_tokens}-token prompt (from the held-out file), "
            f"min_new_tokens = max_new_tokens = {args.new_tokens}, {args.rounds} interleaved rounds, median"
            + (" (**smoke run: fewer than 5 rounds, speed numbers are indicative only**)" if args.rounds < 5 else "")
        ),
        "targets (ringan/conversion/README.md)": (
            f"int8 ≤ {SIZE_LIMIT_MB[8]:g} MB, int4 ≤ {SIZE_LIMIT_MB[4]:g} MB (stated for the default config, "
            f"6.73M parameters; checked here on this model's sizes), speed ≥ {SPEED_MIN_RATIO:g}x PyTorch fp32, "
            f"perplexity within {PPL_LIMIT_PCT[8]:g} % (int8) / {PPL_LIMIT_PCT[4]:g} % (int4) of fp32; "
            "ONNX fp32 (no stated target) is held to the speed floor and the int8 tolerance"
        ),
        "result": f"{n_pass}/{n_checked} checked rows pass; benchmark ran {runtime_s:.0f} s",
    }
    header = machine + [f"- **{k}**: {v}" for k, v in extra.items()]

    lines = [table, ""]
    lines.append(
        "Columns: **size MB** = bytes on disk / 10⁶ of every file of the folder except tokenizer files "
        "(`quantize_folder`'s / `export_onnx`'s `total_bytes`; for fp32, `folder_sizes` of MODEL_DIR). "
        "**perplexity**, **bits/byte**: exact token-weighted values over the held-out windows with each entry's "
        "topic/context ids — PyTorch rows through `evaluate_examples` (models loaded with "
        "`AutoModelForCausalLM.from_pretrained`), ONNX rows token by token through `decode.onnx` from a zero state "
        "per window (`OnnxRingan.feed`). "
        + (
            "**KL** = mean KL(fp32 ‖ format) of the next-token distributions per held-out token (steadier than "
            "Δ ppl on a weak model, where a few tenths of a percent are noise). "
            if has_kl
            else ""
        )
        + "**tok/s** = new tokens / wall seconds of one generate call (prompt prefill included), median over the "
        "rounds; **× PyTorch fp32** = that median over PyTorch fp32's median (the speed target); **× fp32 per "
        "CPU-s** = the same ratio from process CPU time (less sensitive to other jobs on a shared machine); "
        "**× same-runtime fp32** = vs ONNX fp32 for ONNX rows. PyTorch rows: `model.generate` with a plain greedy "
        "`GenerationConfig` (the checkpoint's sampling / repetition-penalty settings are not used); ONNX rows: "
        "`OnnxRingan.generate(..., stop_at_eos=False)` with sessions kept. One warm-up call per format before "
        "the rounds (it includes a quantized model's one-time dequantization); the order rotates each round. "
        "**greedy tokens = fp32**: how many of the warm-up call's new tokens agree with PyTorch fp32's before the "
        "first difference (PyTorch suppresses end-of-sequence until the last token, ONNX does not, so an ONNX row "
        "can part at an end-of-sequence token)."
    )
    lines.append("")
    lines.append("Files counted in each size:")
    lines.append("")
    for row in rows.values():
        files = ", ".join(f"{k} {v / 1e3:,.1f} kB" for k, v in row["files"].items())
        extra = ""
        if "check" in row:
            extra = f" (export check: max |logit diff| vs PyTorch {row['check']:.2e})"
        if "build_s" in row:
            extra += f" — built in {row['build_s']:.1f} s"
        lines.append(f"- {row['label']}: {files}{extra}")
    if notes:
        lines.append("")
        lines += [f"Note: {n}" for n in notes]
    body = "\n".join(lines)

    title = "Quantized formats: size, held-out perplexity and generation speed"
    print(f"# {title}\n")
    print("\n".join(header))
    print()
    print(body)
    if not args.no_write:
        out = Path(args.out)
        C.write_markdown(out, title, header, body)
        log(f"wrote {out}")
    log(f"done in {runtime_s:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
