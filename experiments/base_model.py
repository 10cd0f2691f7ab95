"""Ringan-base: pre-train the base model that ships inside the package, evaluate it, and ship it (issue: base).

The recipe is fixed here and in `protocol.py`: the held-out part of every source (2% of each text file's
characters, 10% of each dialogue file by entry), the protocol's tokenizer (byte-level BPE, vocab 10000, trained on
the training parts of every source and of the bundled corpus), the architecture chosen by the mixer and
conditioning experiments (`BASE_CONFIG`), EPOCHS passes over the text, the IndoSMD dialogues and the XPersona
training split, on the package's Trainer arguments. Long runs checkpoint every SAVE_STEPS and resume.

    python experiments/base_model.py pretrain      # resumable; checkpoints in $RINGAN_EXP_DIR/base
    python experiments/base_model.py evaluate      # held-out bits/byte per source, chars/token
    python experiments/base_model.py ship          # int8 into ringan/base/ with its model card
    python experiments/base_model.py finetune      # quickstart from the base vs from scratch; XPersona fine-tune
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import time
from pathlib import Path

import protocol as P

OUT = P.RESULTS / "base"
WORK = P.WORK / "base"
BASE_CONFIG = {  # the shipped defaults (RinganConfig), spelled out: the recipe does not move with them
    "attention_type": "gated_delta",
    "conv_size": 4,
    "use_output_gate": True,
    "gated_mlp": True,
    "hidden_act": "silu",
    "intermediate_size": 688,
    "conditioning": "text",
    "dropout": 0.0,  # every sequence is seen a few times at most
    "conditioning_dropout": 0.1,
}
LEARNING_RATE = 3e-3
LLAMA_LEARNING_RATE = 1.5e-3  # the same-size Llama's best in the mixer screen (results/mixer)
EPOCHS = 3
SAVE_STEPS = 250
PACKAGE_BASE = P.REPO / "ringan" / "base"


def training_rows(splits, tok) -> list[dict]:
    """Text windows (packed, no conditioning) and dialogue entries (one per sequence, with their Topik/Konteks)."""
    from ringan.data import LabelVocab
    from ringan.training import text_to_examples

    def build():
        rows = text_to_examples(splits.text_train, tok, P.SEQ_LEN)
        rows += P.entry_examples(splits.smd_train + splits.xp_train, tok, LabelVocab([]), LabelVocab([]))
        return rows

    return P.cached("base_rows", build)


def model_dir(arch: str = "ringan") -> Path:
    return WORK / "model" if arch == "ringan" else WORK / arch / "model"


def result_tag(arch: str) -> str:
    return "" if arch == "ringan" else f"_{arch}"


def pretrain(args) -> None:
    """Pre-train the base (`--arch ringan`) or, for the comparison, the same-size Llama on the same rows and steps."""
    import torch

    torch.set_num_threads(int(os.environ.get("RINGAN_THREADS", "1")))
    splits = P.load_splits()
    tok = P.get_tokenizer(splits)
    rows = training_rows(splits, tok)
    random.Random(0).shuffle(rows)
    steps = args.max_steps or math.ceil(EPOCHS * len(rows) / P.BATCH_SIZE)
    epochs = steps * P.BATCH_SIZE / len(rows)
    n_tokens = sum(len(r["input_ids"]) for r in rows)
    ringan = args.arch == "ringan"
    spec = {"kind": "ringan", **BASE_CONFIG} if ringan else {"kind": "llama"}
    lr = LEARNING_RATE if ringan else LLAMA_LEARNING_RATE
    model = P.build_model(spec, len(tok), seed=0)
    work = model_dir(args.arch).parent
    P.log(
        f"{args.arch}: {sum(p.numel() for p in model.parameters()):,} parameters; {len(rows)} sequences,"
        f" {n_tokens:,} tokens per epoch; {steps} steps ({epochs:.2f} epochs) at lr {lr}"
    )
    start = time.time()
    history = P.train_phase(
        model, rows, work / "run", steps, lr, seed=0, with_conditioning=ringan, save_steps=SAVE_STEPS
    )
    model.save_pretrained(str(model_dir(args.arch)))
    tok.save_pretrained(str(model_dir(args.arch)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    P.write_json(
        OUT / f"pretrain{result_tag(args.arch)}.json",
        {
            "config": BASE_CONFIG if ringan else spec,
            "learning_rate": lr,
            "epochs": epochs,  # passes over the rows actually scheduled (less than EPOCHS under --max-steps)
            "steps": steps,
            "tokens_per_epoch": n_tokens,
            "history": history["history"],
            "seconds_this_session": time.time() - start,
            "tokens_this_session": history["tokens"],
            "peak_rss_mib": peak,
        },
    )
    P.log(f"{args.arch}: saved {model_dir(args.arch)} ({time.time() - start:.0f} s, peak RSS {peak:.0f} MiB)")


def evaluate(args) -> None:
    """Held-out bits per byte of the base on each source's held-out part, and chars/token there."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(int(os.environ.get("RINGAN_THREADS", "1")))
    import ringan  # noqa: F401
    from ringan.training import text_to_examples

    splits = P.load_splits()
    tok = P.get_tokenizer(splits)
    model = AutoModelForCausalLM.from_pretrained(str(args.model or model_dir(args.arch))).eval()
    report = {}
    for source, lines in splits.text_heldout.items():
        examples = text_to_examples(lines, tok, P.SEQ_LEN)
        metrics = P.evaluate(model, examples)
        chars = sum(len(line) for line in lines)
        tokens = sum(len(ids) for ids in tok([ln + "\n\n" for ln in lines], add_special_tokens=False)["input_ids"])
        report[source] = {**metrics, "chars_per_token": chars / tokens}
        P.log(f"{source}: bpb {metrics['bits_per_byte']:.4f}, {chars / tokens:.2f} chars/token")
    for name, entries in (("indosmd", splits.smd_val), ("xpersona", splits.xp_val), ("corpus", splits.corpus_val)):
        metrics = P.evaluate(model, P.entry_examples(entries, tok))
        from ringan.data import render_entry

        texts = [render_entry(e) for e in entries]
        tokens = sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])
        report[name] = {**metrics, "chars_per_token": sum(map(len, texts)) / tokens}
        P.log(f"{name}: bpb {metrics['bits_per_byte']:.4f}")
    P.write_json(OUT / f"evaluate{result_tag(args.arch)}{args.tag}.json", report)


SOURCES_TABLE = """\
| file | source | licence |
| --- | --- | --- |
| `prose-id.txt` | IDK-MRC contexts (Indonesian Wikipedia), IndoNLI premises, TICO-19, Tatoeba | CC BY-SA 4.0; CC BY-SA; CC0; CC BY 2.0 FR |
| `xpersona-id-valid.txt` (training split) | XPersona, Indonesian validation split (HLTCHKUST/Xpersona) | MIT |
| `pretrain/dlg_indosmd.txt` | dehanalkautsar/IndoToD (IndoSMD) | CC BY-SA 4.0 |
| `pretrain/xed_id_subtitles.txt` | Helsinki-NLP/XED (OpenSubtitles projections) | CC BY 4.0 |
| `pretrain/talpco.txt` | matbahasa/TALPCo | CC BY 4.0 |
| `pretrain/tatoeba.txt` | facebookresearch/LASER (Tatoeba) | CC BY 2.0 FR |
| `pretrain/stif.txt` | haryoa/stif-indonesia | MIT |
| `pretrain/indonlu_informal.txt`, `pretrain/indonlu_formal.txt` | IndoNLP/indonlu | Apache-2.0 (NusaCrowd lists CC BY-SA 4.0) |
| `pretrain/indolem_tweets.txt` | indolem/indolem | CC BY 4.0 / CC BY-SA 4.0 (per NusaCrowd/SEACrowd) |
| `pretrain/nusax.txt` | IndoNLP/nusax | CC BY-SA 4.0 |
| `pretrain/nusawrites.txt` | IndoNLP/nusa-writes | Apache-2.0 (NusaCrowd lists CC BY-SA 4.0) |
| `pretrain/frog_stories.txt` | matbahasa/corpus-frog-storytelling | CC BY-SA 4.0 |
| `pretrain/pantun.txt` | ilhamfp/puisi-pantun-generator | MIT |
| `pretrain/figqa.txt` | simran-khanuja/Multilingual-Fig-QA | MIT |
| `pretrain/ud.txt` | UniversalDependencies UD_Indonesian-GSD, -CSUI, -PUD | CC BY-SA 4.0 / CC BY-SA 3.0 |
| `pretrain/ntrex.txt` | MicrosoftTranslator/NTREX | CC BY-SA 4.0 |
| `pretrain/indonli.txt` | ir-nlp-csui/indonli | CC BY-SA (Wikipedia CC BY-SA 3.0, UD CC BY-SA, IndoSum Apache-2.0) |
| `pretrain/idkmrc.txt` | rifkiaputri/IDK-MRC (contexts from TyDiQA, SQuAD 2.0 MT) | CC BY-SA 4.0 (per NusaCrowd); TyDiQA Apache-2.0 |
| `pretrain/minangnlp_wiki.txt` | fajri91/minangNLP (Indonesian side) | MIT |
| `pretrain/gunnxx_mt.txt` | gunnxx/indonesian-mt-data | CC BY-SA 4.0 (per NusaCrowd) |
| `pretrain/indocoref.txt` | valentinakania/indocoref | MIT |
| the bundled corpus (training split, tokenizer only) | written for the Ringan project | Apache-2.0 |
"""

MODEL_CARD = """\
---
library_name: transformers
language:
- id
license: cc-by-sa-4.0
pipeline_tag: text-generation
tags:
- ringan
- linear-attention
- gated-deltanet
- dialogue
---

# Ringan-base (int8)

The base model that ships inside the `ringan` package: a {params:,}-parameter decoder-only model for Indonesian
(Gated DeltaNet mixer with a short convolution and an output gate, RoPE, topic/context vectors from the Topik and
Konteks text), pre-trained for {epochs:.2f} epochs ({tokens:,} tokens) on the public Indonesian text listed below, and
stored in int8 (per-row scales; {size_mb:.2f} MB of weights, config and tokenizer). Fine-tune it on your own dialogues:
`ringan train --data my_dialogues.txt` starts from it by default; `ringan generate --model base` talks with it.

## Held-out bits per byte (int8)

| source | bits/byte | chars/token |
| --- | --- | --- |
{heldout_rows}

Held out: the last 2% of the characters of every text file, 10% of the entries of every dialogue file (seed 0);
none of it was seen in training or by the tokenizer.

## Training data

Every source and its licence (as stated by the source; CC BY and CC BY-SA sources require attribution, which this
card gives). Because several sources are CC BY-SA, the weights are released under CC BY-SA 4.0.

{sources}

## How it was made

`python experiments/base_model.py pretrain && python experiments/base_model.py ship` in the Ringan repository
(`experiments/RESULTS.md` holds the measurements). Learning rate {lr}, batch 4 x 1024 tokens, AdamW
(beta2 0.98, weight decay 0.01), warm-up 5% then cosine decay, dropout 0, conditioning dropout
{cd}. A small base writes Indonesian-looking text that stays near its topic; it is not a fluent chat model.
"""


def ship(args) -> None:
    """Quantize the pre-trained base to int8 and write it into the package (`ringan/base/`)."""
    import shutil

    from transformers import AutoModelForCausalLM, GenerationConfig

    import ringan  # noqa: F401
    from ringan.modeling.quantization import quantize_model_

    splits = P.load_splits()
    tok = P.get_tokenizer(splits)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir())).eval()
    params = sum(p.numel() for p in model.parameters())
    quantize_model_(model, bits=8)
    tmp = PACKAGE_BASE.with_name("base.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    for code in tmp.glob("*.py"):  # the package's own classes load it; a stale copy of the code would mislead
        code.unlink()
    config = json.loads((tmp / "config.json").read_text())
    config.pop("auto_map", None)
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    newline_ids = [i for t, i in tok.get_vocab().items() if t and set(t) <= {"Ċ", "Ġ", "ĉ"} and "Ċ" in t]
    GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=[tok.eos_token_id, *sorted(newline_ids)],  # a turn ends at its newline
        pad_token_id=tok.pad_token_id,
        max_new_tokens=120,
        do_sample=True,
        temperature=0.8,
        top_k=50,
        top_p=0.95,
        repetition_penalty=1.1,
    ).save_pretrained(str(tmp))
    # held-out figures of the int8 model, and the sample a test re-scores (the bundled corpus's held-out entries)
    shipped = AutoModelForCausalLM.from_pretrained(str(tmp)).eval()
    heldout = {}
    for source, lines in splits.text_heldout.items():
        from ringan.training import text_to_examples

        heldout[source] = P.evaluate(shipped, text_to_examples(lines, tok, P.SEQ_LEN))["bits_per_byte"]
    for name, entries in (("indosmd", splits.smd_val), ("xpersona", splits.xp_val), ("corpus", splits.corpus_val)):
        heldout[name] = P.evaluate(shipped, P.entry_examples(entries, tok))["bits_per_byte"]
    evaluated = json.loads((OUT / "evaluate.json").read_text()) if (OUT / "evaluate.json").exists() else {}
    rows = "\n".join(
        f"| {name} | {bpb:.4f} | {evaluated.get(name, {}).get('chars_per_token', float('nan')):.2f} |"
        for name, bpb in heldout.items()
    )
    pretrain = json.loads((OUT / "pretrain.json").read_text())
    for path in tmp.iterdir():
        path.chmod(0o644)  # package data: readable by everyone who installs it
    size = sum(p.stat().st_size for p in tmp.iterdir())  # weights, config, tokenizer (the card comes next)
    meta = {
        "name": "ringan-base",
        "parameters": params,
        "quantization": config.get("quantization"),
        "weights_bytes": (tmp / "model.safetensors").stat().st_size,  # a truncated or swapped file differs
        "heldout_bits_per_byte": heldout,
        "sample": "the bundled corpus's held-out entries (ringan.data.split_entries(load_default_corpus(), 0.1, seed=0))",
        "sample_bits_per_byte": heldout["corpus"],
        "tokens_per_epoch": pretrain["tokens_per_epoch"],
        "epochs": pretrain["epochs"],
    }
    (tmp / "ringan_base.json").write_text(json.dumps(meta, indent=1) + "\n")
    card = MODEL_CARD.format(
        params=params,
        epochs=pretrain["epochs"],
        tokens=round(pretrain["tokens_per_epoch"] * pretrain["epochs"]),
        size_mb=size / 1e6,
        heldout_rows=rows,
        sources=SOURCES_TABLE,
        lr=pretrain["learning_rate"],
        cd=BASE_CONFIG["conditioning_dropout"],
    )
    (tmp / "README.md").write_text(card)
    for path in tmp.iterdir():
        path.chmod(0o644)
    shutil.rmtree(PACKAGE_BASE, ignore_errors=True)
    os.replace(tmp, PACKAGE_BASE)
    size = sum(p.stat().st_size for p in PACKAGE_BASE.iterdir())
    P.log(
        f"shipped {PACKAGE_BASE}: {size / 1e6:.2f} MB; held-out bpb "
        + ", ".join(f"{k} {v:.3f}" for k, v in heldout.items())
    )
    P.write_json(OUT / "ship.json", meta | {"bytes": size})


QUICKSTART_STEPS = 100  # the same for both starts (a 3-minute quickstart on 2 cores runs about this many)
QUICKSTART_RATES = {"base": [1e-4, 3e-4, 1e-3, 3e-3], "none": [3e-3]}  # none: the quickstart's rate for a new model
XPERSONA_EPOCHS = 2
XPERSONA_RATES = [3e-4, 1e-3]


def quickstart_comparison(splits, threads: int, max_steps: int = 0) -> dict:
    """`ringan train` as the quickstart calls it, on the quickstart's 40/5 split: from the shipped base vs from a new
    model (with its tokenizer trained on the 40 entries), the same steps; bits/byte on the 5 held-out entries."""
    from ringan.commands.evaluate import evaluate as evaluate_verb
    from ringan.commands.tokenizer import train_tokenizer
    from ringan.commands.train import train as train_verb
    from ringan.data import write_dialogues

    folder = WORK / "quickstart"
    folder.mkdir(parents=True, exist_ok=True)
    write_dialogues(folder / "train.txt", splits.corpus_train)
    write_dialogues(folder / "held_out.txt", splits.corpus_val)
    if not (folder / "tokenizer" / "tokenizer.json").exists():
        train_tokenizer(output=str(folder / "tokenizer"), entries=splits.corpus_train)
    runs = {}
    for start, rates in QUICKSTART_RATES.items():
        for lr in rates:
            name = f"{start}_lr{lr:g}"
            out = folder / name
            began = time.time()
            if not (out / "model" / "config.json").exists():
                extra = {"tokenizer": str(folder / "tokenizer")} if start == "none" else {}
                train_verb(
                    output=str(out),
                    data=[str(folder / "train.txt")],
                    validation_fraction=0.0,
                    init_from=start,
                    learning_rate=lr,
                    max_length=512,
                    batch_size=8,
                    max_steps=max_steps or QUICKSTART_STEPS,
                    save_steps=max_steps or QUICKSTART_STEPS,
                    logging_steps=10,
                    seed=42,
                    threads=threads,
                    overwrite=True,
                    **extra,
                )
            seconds = time.time() - began
            result = evaluate_verb(model=str(out / "model"), data=[str(folder / "held_out.txt")])
            runs[name] = {
                "start": start,
                "lr": lr,
                "bits_per_byte": result["overall"]["bits_per_byte"],
                "seconds": seconds,
            }
            P.log(f"quickstart {name}: held-out bpb {runs[name]['bits_per_byte']:.4f} ({seconds:.0f} s)")
    return runs


def xpersona_comparison(splits, tok, arch: str, max_steps: int = 0) -> dict:
    """A pre-trained base (`ringan` fp32 or the same-size `llama`) fine-tuned the same way on the XPersona training
    split (XPERSONA_EPOCHS) and on the corpus's 40 entries (QUICKSTART_STEPS), at each rate of XPERSONA_RATES;
    bits/byte on the matching held-out entries before and after."""
    from transformers import AutoModelForCausalLM

    import ringan  # noqa: F401

    if not (model_dir(arch) / "config.json").exists():
        raise SystemExit(f"{arch}: no pre-trained model in {model_dir(arch)}: run the pretrain stage first")
    base = AutoModelForCausalLM.from_pretrained(str(model_dir(arch)))
    arms = {
        "xpersona": (splits.xp_train, splits.xp_val, XPERSONA_EPOCHS),
        "corpus": (splits.corpus_train, splits.corpus_val, None),
    }
    report = {}
    for data, (train_entries, val_entries, epochs) in arms.items():
        rows, held = P.entry_examples(train_entries, tok), P.entry_examples(val_entries, tok)
        steps = math.ceil(epochs * len(rows) / P.BATCH_SIZE) if epochs else QUICKSTART_STEPS
        steps = min(steps, max_steps or steps)
        entry = {"before": P.evaluate(base, held)["bits_per_byte"], "steps": steps}
        for lr in XPERSONA_RATES:
            model = AutoModelForCausalLM.from_pretrained(str(model_dir(arch)))
            work = WORK / "finetune" / f"{arch}_{data}_lr{lr:g}"
            P.train_phase(model, rows, work, steps, lr, seed=0, with_conditioning=arch == "ringan", save_steps=steps)
            entry[f"lr{lr:g}"] = P.evaluate(model, held)["bits_per_byte"]
            P.log(f"{arch} {data} lr {lr:g} ({steps} steps): bpb {entry['before']:.4f} -> {entry[f'lr{lr:g}']:.4f}")
        entry["best"] = min(entry[f"lr{lr:g}"] for lr in XPERSONA_RATES)
        report[data] = entry
    return report


def finetune(args) -> None:
    """What a user feels: the quickstart from the base vs from scratch, and Ringan-base vs the same-size Llama base
    fine-tuned identically."""
    import torch

    threads = int(os.environ.get("RINGAN_THREADS", "2"))
    torch.set_num_threads(threads)
    splits = P.load_splits()
    tok = P.get_tokenizer(splits)
    report = {"bases": xpersona_comparison(splits, tok, args.arch, args.max_steps)}
    if args.arch == "ringan":  # the quickstart starts from the shipped (int8) base
        report["quickstart"] = quickstart_comparison(splits, threads, args.max_steps)
    P.write_json(OUT / f"finetune{result_tag(args.arch)}.json", report)


def samples(args) -> None:
    """Ten replies (greedy and sampled) for the quickstart's 5 held-out Konteks, from the quickstart model fine-tuned
    from the base and from the one trained from scratch; written to results/base/samples.{jsonl,md}."""
    from ringan.commands.generate import generate

    splits = P.load_splits()
    finetuned = json.loads((OUT / "finetune.json").read_text())["quickstart"]
    best = {
        start: min((r for r in finetuned.values() if r["start"] == start), key=lambda r: r["bits_per_byte"])
        for start in ("base", "none")
    }
    prompts = WORK / "quickstart" / "prompts.jsonl"
    with prompts.open("w", encoding="utf-8") as f:
        for e in splits.corpus_val:
            turns = [[t.speaker, t.text] for t in e.turns[:1]]
            f.write(
                json.dumps(
                    {"topic": e.topic, "context": e.context, "turns": turns, "speaker": e.turns[1].speaker},
                    ensure_ascii=False,
                )
                + "\n"
            )
    lines = ["# Ringan-base: replies for the quickstart's held-out Konteks", ""]
    for start, run in best.items():
        folder = WORK / "quickstart" / f"{start}_lr{run['lr']:g}" / "model"
        for mode, greedy in (("greedy", True), ("sampled", False)):
            out = OUT / f"samples_{start}_{mode}.jsonl"
            generate(
                model=str(folder),
                prompts=str(prompts),
                output=str(out),
                greedy=greedy,
                seed=0,
                max_new_tokens=60,
                runtime="torch",
            )
            lines += [f"## from {'Ringan-base' if start == 'base' else 'scratch'} (lr {run['lr']:g}), {mode}", ""]
            for row, e in zip((json.loads(x) for x in out.read_text().splitlines()), splits.corpus_val):
                lines += [
                    f"- **{e.topic}** — {e.turns[0].speaker}: {e.turns[0].text}",
                    f"  - reference {e.turns[1].speaker}: {e.turns[1].text}",
                    f"  - model {row['speaker']}: {row['reply']}",
                    "",
                ]
    (OUT / "samples.md").write_text("\n".join(lines), encoding="utf-8")
    P.log(f"wrote {OUT / 'samples.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["pretrain", "evaluate", "ship", "finetune", "samples"])
    parser.add_argument(
        "--arch", choices=["ringan", "llama"], default="ringan", help="pretrain/evaluate/finetune: which model"
    )
    parser.add_argument("--model", help="evaluate this folder instead of the pre-trained base")
    parser.add_argument("--tag", default="", help="suffix of the result file")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=0,
        help="pretrain: schedule this many steps instead of EPOCHS passes; finetune: at most this many (a smoke test)",
    )
    args = parser.parse_args()
    P.require_data()
    {"pretrain": pretrain, "evaluate": evaluate, "ship": ship, "finetune": finetune, "samples": samples}[args.stage](
        args
    )


if __name__ == "__main__":
    main()
