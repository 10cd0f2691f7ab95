"""Multi-query associative recall (MQAR, Zoology-style): can the mixer look a value up by its key in context?

Each sequence lists NUM_PAIRS key-value pairs (keys and values from disjoint token ranges, drawn fresh for every
sequence), then asks NUM_QUERIES of the keys again in a random order; the model must produce each key's value.
Only the answers are scored. Every model (a Ringan mixer or Llama, all at width 128, 2 layers, 2 heads of 64, a
vocabulary of 1,100 and the same FFN shape as the mixer experiment) trains from scratch on the same stream of
random sequences with AdamW (the package's Trainer arguments), and is tested on 2,000 fresh sequences.

    python experiments/recall_probe.py [--models llama gated_delta+conv+gate ...] [--steps 1500]  # other step counts are kept apart
"""

from __future__ import annotations

import argparse
import json
import os

import protocol as P

OUT = P.RESULTS / "recall_probe.json"
VOCAB = 1100
KEYS = range(4, 516)
VALUES = range(516, 1028)
SETTINGS = [(16, 16), (32, 32)]  # (pairs, queries): sequences of 64 and 128 tokens
WIDTH = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2)


def batch(generator, size: int, pairs: int, queries: int):
    """`input_ids` [size, 2 * (pairs + queries)] and `labels` (-100 except at the answers)."""
    import torch

    keys = torch.stack([torch.randperm(len(KEYS), generator=generator)[:pairs] for _ in range(size)]) + KEYS.start
    values = torch.randint(VALUES.start, VALUES.stop, (size, pairs), generator=generator)
    asked = torch.stack([torch.randint(0, pairs, (queries,), generator=generator) for _ in range(size)])
    context = torch.stack([keys, values], dim=-1).view(size, 2 * pairs)
    qa = torch.stack([keys.gather(1, asked), values.gather(1, asked)], dim=-1).view(size, 2 * queries)
    ids = torch.cat([context, qa], dim=1)
    labels = torch.full_like(ids, -100)
    labels[:, 2 * pairs + 1 :: 2] = ids[:, 2 * pairs + 1 :: 2]  # each answer, predicted from its key
    return ids, labels


def build(name: str, seed: int):
    import torch

    torch.manual_seed(seed)
    if name == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(vocab_size=VOCAB, num_key_value_heads=2, tie_word_embeddings=False, **WIDTH)
        config._attn_implementation = "sdpa"
        return LlamaForCausalLM(config)
    from mixer_choice import CANDIDATES

    spec = {k: v for k, v in CANDIDATES[name].items() if k != "kind"}
    spec.pop("intermediate_size", None)
    return P.build_model({"kind": "ringan", **spec, **WIDTH}, VOCAB, seed)


def run(name: str, steps: int, lr: float, seed: int) -> dict:
    import torch
    from transformers import get_cosine_schedule_with_warmup

    model = build(name, seed).train()
    # the optimizer and schedule of `ringan.training.training_arguments` (AdamW, beta2 0.98, weight decay 0.01,
    # 5% warm-up then cosine, clipping at 1.0), in a plain loop: the batches are generated, not a dataset
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, int(0.05 * steps)), steps)
    generator = torch.Generator().manual_seed(seed)
    results = {}
    for step in range(steps):
        pairs, queries = SETTINGS[step % len(SETTINGS)]
        ids, labels = batch(generator, 64, pairs, queries)
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0:
            P.log(f"{name}: step {step} loss {loss.item():.3f}")
    model.eval()
    test = torch.Generator().manual_seed(10_000 + seed)
    for pairs, queries in SETTINGS:
        correct = total = 0
        with torch.no_grad():
            for _ in range(2000 // 100):
                ids, labels = batch(test, 100, pairs, queries)
                logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
                target = labels[:, 1:]
                hit = (logits.argmax(-1) == target) & (target != -100)
                correct += int(hit.sum())
                total += int((target != -100).sum())
        results[f"{pairs}_pairs"] = correct / total
    P.log(f"{name}: accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in results.items()))
    return {"accuracy": results, "steps": steps, "lr": lr, "parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["llama", "gated_delta+conv+gate", "linear", "delta+conv+gate"])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("RINGAN_THREADS", "1")))
    saved = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in args.models:
        key = f"{name}_s{args.seed}" + (f"_{args.steps}steps" if args.steps != 1500 else "")
        if key not in saved:
            result = run(name, args.steps, args.lr, args.seed)
            # re-read before writing: another run of this script (another model) may have added its result
            saved = {**(json.loads(OUT.read_text()) if OUT.exists() else {}), key: result}
            P.write_json(OUT, saved)
    print("| model | " + " | ".join(f"recall, {p} pairs" for p, _ in SETTINGS) + " |")
    print("| --- | " + " | ".join("---" for _ in SETTINGS) + " |")
    for key, r in saved.items():
        print(f"| {key} | " + " | ".join(f"{r['accuracy'][f'{p}_pairs']:.3f}" for p, _ in SETTINGS) + " |")


if __name__ == "__main__":
    main()
