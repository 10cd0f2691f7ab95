"""`ringan quickstart`: the whole job on the shipped corpus, from a tokenizer to a reload in a fresh process."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..data import corpus_statistics, load_default_corpus, render_entry, split_entries, write_dialogues
from ..errors import UserError
from ..fresh_process import run_python_without_ringan
from ..options import Options, option
from .common import load_tokenizer, set_threads
from .evaluate import evaluate
from .generate import generate
from .tokenizer import train_tokenizer
from .train import train

HELD_OUT = "held_out.txt"
TRAIN_SPLIT = "train.txt"
SPLIT_SEED = 0  # the experiments' split of the bundled corpus
BASE_LEARNING_RATE = (
    3e-4  # fine-tuning the base: the best of 1e-4..3e-3 on the quickstart split (experiments/RESULTS.md)
)
# Loads the saved model the way a user without the package would, and greedily continues a topic header.
RELOAD_CHECK = """
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder = sys.argv[1]
tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
ids = tok("==== Topik: ", return_tensors="pt")
out = model.generate(**ids, max_new_tokens=8, do_sample=False)
print(f"fresh process: {type(model).__name__} from {type(model).__module__} "
      f"({sum(p.numel() for p in model.parameters()):,} parameters), ringan imported: {'ringan' in sys.modules}; "
      f"greedy continuation: {tok.decode(out[0], skip_special_tokens=True)!r}")
"""


@dataclass(frozen=True, kw_only=True)
class QuickstartOptions(Options):
    """The whole job on the shipped corpus: fine-tune Ringan-base on it (or, without the base, train a tokenizer
    and a new model), evaluate on the 5 held-out entries, generate a dialogue, and reload the saved model through
    AutoModelForCausalLM in a fresh process."""

    output: str = option("runs/quickstart", "run folder")
    minutes: float = option(3.0, "training time budget (the step count is sized from a short speed probe)", above=0)
    topic: str | None = option(
        None, "the Topik of the generated dialogue", default_text="the first topic of the training split"
    )
    seed: int = option(42, "random seed")
    overwrite: bool = option(False, "OUTPUT holds an earlier quickstart: replace it")


def quickstart(options: QuickstartOptions | None = None, /, **overrides) -> dict:
    """Run every step, printing as it goes; returns `{"train": metrics, "eval": evaluation}`."""
    o = QuickstartOptions.build(options, overrides)
    started = time.time()
    output = Path(o.output)
    _clear(output, o.overwrite)
    threads = set_threads(0)
    entries = load_default_corpus()
    # a fixed split (seed 0): the same 5 held-out entries as experiments/, never seen by the base or its tokenizer
    train_entries, val_entries = split_entries(entries, 0.1, SPLIT_SEED)
    stats = corpus_statistics(entries)
    print(
        f"data: {stats['entries']} entries, {stats['turns']} turns, {stats['characters']:,} characters, "
        f"{stats['topics']} topics ({len(train_entries)} train / {len(val_entries)} held out)"
    )
    # `ringan train` reads exactly the training split: its own validation split would use another seed
    write_dialogues(output / TRAIN_SPLIT, train_entries)
    write_dialogues(output / HELD_OUT, val_entries)
    base = _shipped_base()
    if base is not None:
        print(f"start: Ringan-base ({base}), fine-tuned in fp32 (--init-from base)")
        start = {"init_from": "base", "learning_rate": BASE_LEARNING_RATE}
        vocab = len(load_tokenizer(base))
    else:
        print("start: a new model (this installation has no Ringan-base)")
        tok_dir = output / "tokenizer"
        train_tokenizer(output=str(tok_dir), entries=train_entries)  # held-out entries stay unseen
        start = {"init_from": "none", "tokenizer": str(tok_dir), "learning_rate": 3e-3}
        vocab = len(load_tokenizer(tok_dir))

    batch_size, max_length = 8, 512
    step = probe_step_seconds(vocab, batch_size, max_length, threads, base)
    sequences = sum(max(1, math.ceil(len(render_entry(e)) / 4.4 / max_length)) for e in train_entries)
    steps = max(30, int(o.minutes * 60 / (step * 1.25)))
    print(
        f"budget: {o.minutes:.1f} min at {step:.2f} s/step -> {steps} steps (~{steps * batch_size / sequences:.0f} epochs)"
    )
    metrics = train(
        output=str(output),
        data=[str(output / TRAIN_SPLIT)],
        validation_fraction=0.0,
        **start,
        max_length=max_length,
        batch_size=batch_size,
        max_steps=steps,
        save_steps=max(steps // 4, 1),
        logging_steps=max(steps // 20, 1),
        seed=o.seed,
        threads=threads,
    )
    model_dir = output / "model"
    print("\n== held-out evaluation ==")
    evaluation = evaluate(model=str(model_dir), data=[str(output / HELD_OUT)])

    print("\n== a generated dialogue ==")
    trained = train_entries[0] if o.topic is None else next((e for e in train_entries if e.topic == o.topic), None)
    if trained is None:
        raise UserError(f"unknown topic {o.topic!r} for the quickstart")
    generate(
        model=str(model_dir),
        topic=trained.topic,
        context=trained.context,
        turn=[f"{trained.turns[0].speaker}: {trained.turns[0].text}"],
        speakers=trained.speakers[:2],
        num_turns=3,
        max_new_tokens=80,
        seed=o.seed,
        stream=False,
    )
    print("== self-contained checkpoint ==")
    result = run_python_without_ringan(
        RELOAD_CHECK, str(model_dir.resolve()), cwd=output, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    if result.returncode != 0:
        raise UserError(f"the saved model did not load in a fresh process:\n{result.stderr[-2000:]}")
    print(result.stdout.strip())
    print(f"\ndone in {time.time() - started:.0f} s: model in {model_dir}")
    return {"train": metrics, "eval": evaluation}


def _shipped_base() -> Path | None:
    from ..base_model import base_model_path

    try:
        return base_model_path()
    except FileNotFoundError:
        return None


def _clear(output: Path, overwrite: bool) -> None:
    """An earlier quickstart in OUTPUT is refused, or (with `overwrite`) its files are removed; nothing else is."""
    from ..files import FolderLock
    from ..runs import remove, run_files

    lock = FolderLock(output).acquire()  # not while a run is using the folder
    try:
        earlier = run_files(output) + [p for p in (output / HELD_OUT, output / TRAIN_SPLIT) if p.exists()]
        if earlier and not overwrite:
            raise UserError(
                f"{output}: holds an earlier run ({', '.join(p.name for p in earlier[:5])}); pass --overwrite to "
                "replace it, or choose another --output"
            )
        remove(earlier)
    finally:
        lock.release()


def probe_step_seconds(vocab: int, batch_size: int, max_length: int, threads: int, base: Path | None = None) -> float:
    """Time a few training steps of the model the quickstart trains (the base's architecture, or a default-size
    new one), to size the run to a time budget."""
    import torch

    import ringan

    from ..loading import read_model_config

    config = read_model_config(base) if base is not None else ringan.RinganConfig(vocab_size=vocab)
    config.quantization = None  # trained in fp32
    model = ringan.RinganForCausalLM(config).train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(4, vocab, (batch_size, max_length))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        model(ids, labels=ids).loss.backward()
        optim.step()
        optim.zero_grad()
        times.append(time.perf_counter() - start)
    return min(times[1:])
