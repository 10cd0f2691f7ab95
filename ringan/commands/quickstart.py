"""`ringan quickstart`: the whole job on the shipped corpus, from a tokenizer to a reload in a fresh process."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..data import corpus_statistics, load_default_corpus, render_dialogue, split_entries, write_dialogues
from ..errors import UserError
from ..fresh_process import run_python_without_ringan
from ..model_card import card_with_held_out
from ..options import Options, option
from .common import set_threads, threads_option
from .evaluate import evaluate
from .generate import generate
from .tokenizer import train_tokenizer
from .train import FINE_TUNE_LEARNING_RATE, NEW_MODEL_LEARNING_RATE, train

HELD_OUT = "held_out.txt"
TRAIN_SPLIT = "train.txt"
SPLIT_SEED = 0  # the experiments' split of the bundled corpus
# a fixed step count, not a time budget: the same command gives the same model on every machine
QUICKSTART_STEPS = 100
# Loads the saved model the way a user without the package would, and greedily writes the next speaker's turn
# of a held-out dialogue's prompt (argv[2]): prints the reply as text.
RELOAD_CHECK = """
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompt = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
out = model.generate(**ids, max_new_tokens=40, do_sample=False)
reply = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip().split("\\n")[0]
print(f"fresh process: {type(model).__name__} from {type(model).__module__} "
      f"({model.num_parameters():,} parameters), ringan imported: {'ringan' in sys.modules}")
print(f"greedy reply: {prompt.rsplit(chr(10), 1)[-1]} {reply}")
"""


@dataclass(frozen=True, kw_only=True)
class QuickstartOptions(Options):
    """The whole job on the shipped corpus: fine-tune Ringan-base on it (or, without the base, train a tokenizer
    and a new model) for a fixed number of steps, evaluate on the 5 held-out entries, generate a dialogue, and
    reload the saved model through AutoModelForCausalLM in a fresh process."""

    output: str = option("runs/quickstart", "run folder")
    topic: str | None = option(
        None, "the Topik of the generated dialogue", default_text="the first topic of the training split"
    )
    seed: int = option(42, "random seed")
    overwrite: bool = option(False, "OUTPUT holds an earlier quickstart: replace it")
    threads: int = threads_option()


def quickstart(options: QuickstartOptions | None = None, /, **overrides) -> dict:
    """Run every step, printing as it goes; returns `{"train": metrics, "eval": evaluation}`."""
    o = QuickstartOptions.build(options, overrides)
    started = time.time()
    output = Path(o.output)
    _clear(output, o.overwrite)
    threads = set_threads(o.threads)
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
        start = {"init_from": "base", "learning_rate": FINE_TUNE_LEARNING_RATE}
    else:
        print("start: a new model (this installation has no Ringan-base)")
        tok_dir = output / "tokenizer"
        train_tokenizer(output=str(tok_dir), entries=train_entries)  # held-out entries stay unseen
        start = {"init_from": "none", "tokenizer": str(tok_dir), "learning_rate": NEW_MODEL_LEARNING_RATE}
    steps = QUICKSTART_STEPS
    metrics = train(
        output=str(output),
        data=[str(output / TRAIN_SPLIT)],
        validation_fraction=0.0,
        **start,
        max_length=512,
        batch_size=8,
        max_steps=steps,
        save_steps=steps,  # one checkpoint, at the end; removed once the final model is saved
        save_total_limit=1,
        logging_steps=max(steps // 20, 1),
        seed=o.seed,
        threads=threads,
    )
    _remove_checkpoints(output)
    model_dir = output / "model"
    print("\n== held-out evaluation ==")
    evaluation = evaluate(model=str(model_dir), data=[str(output / HELD_OUT)])
    card = model_dir / "README.md"
    card.write_text(card_with_held_out(card.read_text(encoding="utf-8"), evaluation["overall"], len(val_entries)))

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
    held = val_entries[0]
    prompt = render_dialogue(held.topic, held.context, held.turns[:1], next_speaker=held.turns[1].speaker)
    result = run_python_without_ringan(
        RELOAD_CHECK, str(model_dir.resolve()), prompt, cwd=output, env={**os.environ, "HF_HUB_OFFLINE": "1"}
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


def _remove_checkpoints(output: Path) -> None:
    """The quickstart is not resumed: once `model/` is saved its optimizer checkpoints (3x the model) go."""
    from ..runs import remove

    remove(sorted(output.glob("checkpoint-*")))
