"""Ringan-base: evaluate the base model that ships inside the package, ship it, and the older experiments on it.

The shipped base is trained by the product itself (`recipes/ringan-base.yaml`, run by `ringan train`); this script
scores a model folder on the protocol's held-out parts (2% of each text file's characters, 10% of each dialogue file
by entry, seed 0) and the curated corpus's test split, each with the folder's own tokenizer, and ships the
recipe's output as int8. `pretrain` and `finetune` are the first base's experiments (the same-size Llama arm and
the quickstart comparison), kept for the figures of experiments/RESULTS.md §3.

    python experiments/base_model.py evaluate --model ringan/base --tag _today     # held-out bits/byte per set
    python experiments/base_model.py ship --baseline _today   # the recipe's model, int8, into ringan/base/ with
                                                             # its card; its figures against today's
    python experiments/base_model.py pretrain      # (first base) resumable; checkpoints in $RINGAN_EXP_DIR/base
    python experiments/base_model.py finetune      # quickstart from the base vs from scratch; XPersona fine-tune
"""

from __future__ import annotations

import argparse
import csv
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


RECIPE_MODEL = P.REPO / "runs" / "ringan-base" / "model"  # `ringan train --config recipes/ringan-base.yaml`
CURATED_TEST = P.REPO / "corpus" / "test"  # Topik never seen in training or validation


def heldout_figures(folder: Path) -> dict[str, dict]:
    """Bits per byte and chars/token of the model in `folder`, with its own tokenizer, on every held-out set:
    each text source, all of them at once (`prose`), IndoSMD, XPersona, the curated test split and the bundled
    corpus's held-out entries (`corpus`, the sample the base's test re-scores)."""
    from ringan.data import read_dialogues, render_entry
    from ringan.loading import load_model
    from ringan.training import text_to_examples

    model, tok = load_model(folder)
    splits = P.load_splits()

    def chars_per_token(texts: list[str]) -> float:
        tokens = sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])
        return sum(map(len, texts)) / tokens

    report = {}
    for source, lines in splits.text_heldout.items():
        report[source] = P.evaluate(model, text_to_examples(lines, tok, P.SEQ_LEN))
        report[source]["chars_per_token"] = chars_per_token([ln + "\n\n" for ln in lines])
    prose = [x for lines in splits.text_heldout.values() for x in text_to_examples(lines, tok, P.SEQ_LEN)]
    all_lines = [ln + "\n\n" for lines in splits.text_heldout.values() for ln in lines]
    report["prose"] = P.evaluate(model, prose) | {"chars_per_token": chars_per_token(all_lines)}
    dialogues = {
        "indosmd": splits.smd_val,
        "xpersona": splits.xp_val,
        "curated_test": read_dialogues(CURATED_TEST) if CURATED_TEST.is_dir() else [],
        "corpus": splits.corpus_val,
    }
    for name, entries in dialogues.items():
        if entries:
            texts = [render_entry(e) for e in entries]
            report[name] = P.evaluate(model, P.entry_examples(entries, tok)) | {
                "chars_per_token": chars_per_token(texts)
            }
    for name, figures in report.items():
        P.log(f"{folder}: {name}: bpb {figures['bits_per_byte']:.4f}, {figures['chars_per_token']:.2f} chars/token")
    return report


def evaluate(args) -> None:
    """Held-out figures of a model folder (default: the recipe's output) -> results/base/evaluate{tag}.json; with
    `--baseline TAG`, a table of this model against that earlier result."""
    import torch

    torch.set_num_threads(int(os.environ.get("RINGAN_THREADS", "1")))
    folder = Path(args.model) if args.model else RECIPE_MODEL
    report = heldout_figures(folder)
    P.write_json(OUT / f"evaluate{args.tag}.json", {"model": str(folder), "figures": report})
    if args.baseline:
        print_comparison(report, args.baseline, args.tag)


def print_comparison(report: dict, baseline: str, tag: str) -> None:
    """A markdown table of `report` against results/base/evaluate<baseline>.json."""
    before = json.loads((OUT / f"evaluate{baseline}.json").read_text())["figures"]
    print(f"| held-out set | {baseline.strip('_')} bits/byte | {tag.strip('_')} | ratio |")
    print("| --- | --- | --- | --- |")
    for name, figures in report.items():
        if name in before:
            old, new = before[name]["bits_per_byte"], figures["bits_per_byte"]
            print(f"| {name} | {old:.4f} | {new:.4f} | {new / old:.3f} |")


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
| `corpus/train` | the Ringan curated dialogue corpus (training split), written by the project | Apache-2.0 |
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
Konteks text), trained for {epochs:g} epoch ({tokens:,} tokens, {steps:,} steps) on the project's curated
dialogue corpus ({curated:,} entries), IndoSMD and XPersona dialogues and the public Indonesian text listed below,
and stored in int8 (per-row scales; {size_mb:.2f} MB of weights, config and tokenizer). Fine-tune it on your own
dialogues: `ringan train --data my_dialogues.txt` starts from it by default; `ringan generate --model base`
talks with it.

## Held-out bits per byte (int8)

| held-out set | bits/byte | chars/token |
| --- | --- | --- |
{heldout_rows}

Held out: the last 2% of the characters of every text file, 10% of the entries of every dialogue file (seed 0),
and the curated corpus's test split (Topik never seen in training); none of it was seen in training or by the
tokenizer. `prose` is every text source's held-out part at once.

## Training data

Every source and its licence (as stated by the source; CC BY and CC BY-SA sources require attribution, which this
card gives). Because several sources are CC BY-SA, the weights are released under CC BY-SA 4.0.

{sources}

The curated corpus is original informal (`aku`/`kamu`) dialogue written for this project by language-model
writers from a written plan and seeded spec rows, each file checked by `python -m ringan.curation check`; it is
described in the repository's `corpus/README.md`.

## How it was made

By the product's own training path, in the Ringan repository with `../shared/data` beside it:
`python experiments/base_data.py && ringan train --config recipes/ringan-base.yaml --resume auto`, then
`python experiments/base_model.py ship` (int8 through `ringan.conversion.quantize_folder`).
`runs/ringan-base/options.json` of that run holds every option; in short: its own byte-level BPE tokenizer
(10,000 tokens) trained on the training data, learning rate {lr}, batch {batch} x {max_length} tokens, AdamW,
warm-up {warmup:.0%} then cosine decay, dropout {dropout}, conditioning dropout {cd}, fp32 on {threads} CPU
threads. A 7M-parameter model writes short informal turns in the corpus's style; it is not a knowledgeable or
reliable chat model.
"""


def ship(args) -> None:
    """Quantize the recipe's model to int8 and write it into the package (`ringan/base/`), its modeling files kept
    as the package's links, with its card and the figures its test re-scores (`ringan_base.json`)."""
    import shutil

    from ringan.conversion.quantize import quantize_folder
    from ringan.data import read_dialogues

    source = Path(args.model) if args.model else RECIPE_MODEL
    run = source.parent
    options = json.loads((run / "options.json").read_text())
    state = json.loads((run / "run.json").read_text())
    tmp = PACKAGE_BASE.with_name("base.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    quantize_folder(source, tmp, bits=8)
    # the base's modeling files are links into the package (never a second copy); no per-Topik Konteks list
    for path in tmp.iterdir():
        if path.suffix == ".py" or path.name in ("topic_contexts.json", "special_tokens_map.json"):
            path.unlink()
    for link in PACKAGE_BASE.glob("*.py"):
        os.symlink(os.readlink(link), tmp / link.name)
    # the run's Topik/Konteks id vocabularies: no defaults for the base's users (`chat` would start on a training
    # Topik whose Konteks the base does not ship), and a text-conditioned model never reads them
    config = json.loads((tmp / "config.json").read_text())
    config["topic_names"] = config["context_names"] = None
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    heldout = heldout_figures(tmp)
    rows = "\n".join(
        f"| {name} | {f['bits_per_byte']:.4f} | {f['chars_per_token']:.2f} |" for name, f in heldout.items()
    )
    with (run / "metrics.csv").open(newline="") as f:  # the Trainer's count of the tokens it trained on
        tokens = max(int(row["num_input_tokens_seen"] or 0) for row in csv.DictReader(f))
    from ringan.loading import load_model

    model, _ = load_model(tmp)
    n_params = model.num_parameters()
    size = sum(p.stat().st_size for p in tmp.iterdir() if not p.is_symlink())  # weights, config, tokenizer
    meta = {
        "name": "ringan-base",
        "parameters": n_params,
        "quantization": config.get("quantization"),
        "weights_bytes": (tmp / "model.safetensors").stat().st_size,  # a truncated or swapped file differs
        "heldout_bits_per_byte": {name: f["bits_per_byte"] for name, f in heldout.items()},
        "sample": "the bundled corpus's held-out entries (ringan.data.split_entries(load_default_corpus(), 0.1, seed=0))",
        "sample_bits_per_byte": heldout["corpus"]["bits_per_byte"],
        "recipe": "recipes/ringan-base.yaml",
        "steps": state.get("global_step"),
        "epochs": options["epochs"],
        "tokens": tokens,
    }
    (tmp / "ringan_base.json").write_text(json.dumps(meta, indent=1) + "\n")
    card = MODEL_CARD.format(
        params=n_params,
        epochs=options["epochs"],
        tokens=tokens,
        steps=state.get("global_step") or 0,
        curated=len(read_dialogues(P.REPO / "corpus" / "train")),
        size_mb=size / 1e6,
        heldout_rows=rows,
        sources=SOURCES_TABLE,
        lr=options["learning_rate"],
        batch=options["batch_size"],
        max_length=options["max_length"],
        warmup=options["warmup_ratio"],
        dropout=options["dropout"],
        cd=options["conditioning_dropout"],
        threads=options["threads"],
    )
    (tmp / "README.md").write_text(card)
    for path in tmp.iterdir():
        if not path.is_symlink():
            path.chmod(0o644)  # package data: readable by everyone who installs it
    shutil.rmtree(PACKAGE_BASE)
    os.replace(tmp, PACKAGE_BASE)
    size = sum(p.stat().st_size for p in PACKAGE_BASE.iterdir() if not p.is_symlink())
    P.log(f"shipped {PACKAGE_BASE}: {size / 1e6:.2f} MB with the card")
    P.write_json(OUT / "ship.json", meta | {"bytes": size})
    P.write_json(OUT / f"evaluate{args.tag or '_shipped'}.json", {"model": str(PACKAGE_BASE), "figures": heldout})
    if args.baseline:
        print_comparison(heldout, args.baseline, args.tag or "_shipped")


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
    parser.add_argument("--model", help="evaluate/ship: this folder instead of the recipe's (runs/ringan-base/model)")
    parser.add_argument("--baseline", help="evaluate: print a table against results/base/evaluate<BASELINE>.json")
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
