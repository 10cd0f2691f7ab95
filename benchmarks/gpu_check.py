"""One short GPU run: Ringan on CUDA with flash-linear-attention's kernels vs its pure-PyTorch path vs the
same-size LlamaForCausalLM (SDPA). Prints a markdown table; writes it to --out when given.

    python benchmarks/gpu_check.py --out results/gpu.md

Each row is one measurement in this process (CUDA events, warm-up first), so the ratios compare like
with like on the same card.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from ringan import RinganConfig, RinganForCausalLM
from ringan.modeling import ops_linear_attention


def timed(fn, repeat: int = 3) -> float:
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def llama(vocab: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=262144, tie_word_embeddings=False, attn_implementation="sdpa",
    )  # fmt: skip
    return LlamaForCausalLM(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None)
    parser.add_argument("--max-length", type=int, default=131072)
    args = parser.parse_args()
    device = torch.device("cuda")
    vocab = 10000
    rows: list[str] = []
    header = (
        f"# GPU check\n\n{torch.cuda.get_device_name()} | torch {torch.__version__} | transformers "
        f"{transformers.__version__} | fla: {ops_linear_attention._FLA_KERNEL is not None} | "
        f"{platform.python_version()}\n\n| what | model | size | time | tokens/s | vs Llama |\n| --- | --- | --- | --- | --- | --- |"
    )
    print(header, flush=True)

    def emit(what, model, size, seconds, tokens, ref=None):
        row = f"| {what} | {model} | {size} | {seconds * 1e3:.1f} ms | {tokens / seconds:,.0f} | {'' if ref is None else f'{ref / seconds:.1f}x'} |"
        rows.append(row)
        print(row, flush=True)

    torch.manual_seed(0)
    ringan_model = RinganForCausalLM(RinganConfig(vocab_size=vocab, dropout=0.0)).to(device).eval()
    llama_model = llama(vocab).to(device).eval()

    # prefill, batch 1, fp32
    for length in [4096, 16384, 65536, args.max_length]:
        ids = torch.randint(4, vocab, (1, length), device=device)
        with torch.no_grad():
            t_llama = None
            if length <= 65536:
                try:
                    t_llama = timed(lambda ids=ids: llama_model(ids, logits_to_keep=1))
                    emit("prefill fp32", "llama sdpa", length, t_llama, length)
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
            t = timed(lambda ids=ids: ringan_model(ids, logits_to_keep=1))
            emit("prefill fp32", "ringan fla", length, t, length, t_llama)
            os.environ["RINGAN_DISABLE_FLA"] = "1"
            t = timed(lambda ids=ids: ringan_model(ids, logits_to_keep=1))
            del os.environ["RINGAN_DISABLE_FLA"]
            emit("prefill fp32", "ringan torch", length, t, length, t_llama)

    # training step (forward + backward + AdamW), fp32 and bf16 autocast
    for batch, length in [(8, 512), (2, 2048), (1, 8192)]:
        ids = torch.randint(4, vocab, (batch, length), device=device)
        for dtype in [None, torch.bfloat16]:
            results = {}
            for name, model in [("llama sdpa", llama_model), ("ringan torch", ringan_model)]:
                model.train()
                optim = torch.optim.AdamW(model.parameters(), lr=1e-4)

                def step(model=model, optim=optim, ids=ids, dtype=dtype):
                    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                        loss = model(input_ids=ids, labels=ids).loss
                    loss.backward()
                    optim.step()
                    optim.zero_grad(set_to_none=True)

                results[name] = timed(step)
                model.eval()
                tag = "train bf16" if dtype else "train fp32"
                emit(
                    tag,
                    name,
                    f"{batch}x{length}",
                    results[name],
                    batch * length,
                    results.get("llama sdpa") if name != "llama sdpa" else None,
                )

    # greedy decode after a 16k context
    ids = torch.randint(4, vocab, (1, 16384), device=device)
    with torch.no_grad():
        for name, model in [("llama sdpa", llama_model), ("ringan fla", ringan_model)]:
            n = 128
            t_short = timed(lambda model=model: model.generate(ids, max_new_tokens=1, do_sample=False), repeat=1)
            t_long = timed(
                lambda model=model, n=n: model.generate(
                    ids, max_new_tokens=n + 1, min_new_tokens=n + 1, do_sample=False
                ),
                repeat=1,
            )
            emit("decode after 16k", name, f"{n} tokens", t_long - t_short, n)
    if args.out:
        with open(args.out, "w") as f:
            f.write(header + "\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
