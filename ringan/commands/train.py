"""`ringan train`: train a model on dialogue files with the HF Trainer and save it with its tokenizer and card."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data import LabelVocab, read_dialogues, split_entries
from ..defaults import VOCAB_BOUNDS, config_defaults
from ..errors import OptionError, UserError
from ..loading import check_saved_model, load_tokenizer
from ..model_card import model_card
from ..options import Options, default_of, flag, option
from ..runs import OPTIONS_FILE, RunPlan, on_main_process, prepare_run, refuse_other_run
from .common import data_option, data_paths, init_folder, read_text_lines, require_extra, set_threads, threads_option
from .train_setup import build_model, close_progress_bars, model_sizes, save_final_model, tokenizer_folder

NEW = " (--init-from none only)"
# a new model's rate (the mixer screen's choice) and epochs, and fine-tuning's: the best measured for the README's
# `ringan train --data my.txt` from Ringan-base on the bundled corpus (experiments/RESULTS.md §4, finetune_lr.py)
NEW_MODEL_LEARNING_RATE, NEW_MODEL_EPOCHS = 3e-3, 10.0
FINE_TUNE_LEARNING_RATE, FINE_TUNE_EPOCHS = 3e-4, 20.0
MAX_STEPS = 1_000_000_000  # limits on a run's length: a typo never trains without end
MAX_EPOCHS = 100_000
MODEL = config_defaults()  # RinganConfig's defaults, read without importing torch (a fast --help)


@dataclass(frozen=True, kw_only=True)
class TrainOptions(Options):
    """Train a Ringan model on dialogue files with the Hugging Face Trainer (from scratch or from a checkpoint).

    Evaluates perplexity and bits per byte on the validation split at every eval, logs to
    OUTPUT/metrics.csv (and TensorBoard with --tensorboard), keeps complete checkpoints in OUTPUT,
    and saves the final model with its tokenizer and model card to OUTPUT/model. A folder that holds
    another run is refused unless you pass --resume auto (continue it) or --overwrite (replace it);
    one run at a time may use a folder.
    """

    data: list[str] | None = data_option()
    validation_data: list[str] | None = option(
        None,
        "dialogue files or folders to validate on (then all of --data trains and --validation-fraction is unused)",
        default_text="--validation-fraction of --data's entries",
    )
    output: str = option("runs/ringan", "run folder (checkpoints, metrics.csv, model/)")
    tokenizer: str | None = option(
        None, "a saved tokenizer folder", default_text="train one on the data, saved in OUTPUT/model"
    )
    text: list[str] | None = option(
        None, "plain-text files mixed in (one paragraph per line), e.g. prose for pre-training"
    )
    init_from: str = option(
        "base",
        "what training starts from: 'base' (Ringan-base, shipped with the package: fine-tuning), a saved model "
        "folder (its tokenizer is reused), or 'none' (a new model with the options below and its own tokenizer)",
    )
    resume: str | None = option(
        None,
        "'auto' (latest checkpoint in OUTPUT, if any; a finished run says so and stops) or a checkpoint folder: "
        "restores optimizer, scheduler, RNG and data position",
    )
    overwrite: bool = option(
        False, "OUTPUT holds another run: delete its files (checkpoints, model, best, metrics) and start fresh"
    )
    # the model's defaults are RinganConfig's: one definition for the CLI and for Python
    attention_type: str = option(MODEL["attention_type"], "the sequence mixer" + NEW, choices=MODEL["ATTENTION_TYPES"])
    hidden_size: int = option(MODEL["hidden_size"], "model width" + NEW, minimum=1, maximum=16384)
    num_layers: int = option(MODEL["num_hidden_layers"], "decoder layers" + NEW, minimum=1, maximum=256)
    num_heads: int = option(MODEL["num_attention_heads"], "attention heads" + NEW, minimum=1, maximum=1024)
    intermediate_size: int = option(MODEL["intermediate_size"], "feed-forward width" + NEW, minimum=1, maximum=65536)
    conditioning: str = option(
        MODEL["conditioning"],
        "topic/context vectors from the Topik/Konteks text (any text), from id tables (known ones only), or none" + NEW,
        choices=MODEL["CONDITIONING_MODES"],
    )
    num_topics: int = option(
        MODEL["num_topics"], "topic id rows incl. row 0 = unknown (ids)" + NEW, minimum=1, maximum=1_000_000
    )
    num_contexts: int = option(
        MODEL["num_contexts"], "context id rows incl. row 0 = unknown (ids)" + NEW, minimum=1, maximum=1_000_000
    )
    dropout: float = option(MODEL["dropout"], "dropout on embeddings and residual branches" + NEW, minimum=0, below=1)
    conditioning_dropout: float = option(
        MODEL["conditioning_dropout"],
        "share of training sequences that lose their topic (and, apart, their context); also when fine-tuning",
        minimum=0,
        below=1,
    )
    vocab_size: int = option(
        10000, "tokenizer vocabulary when one is trained here (at most this many tokens)" + NEW, **VOCAB_BOUNDS
    )
    max_length: int = option(
        1024, "tokens per training sequence; longer entries are split, never dropped", minimum=2, maximum=131072
    )
    pack: bool = option(False, "pack several entries per sequence (per-token topic/context ids)")
    batch_size: int = option(8, "sequences per device per step", minimum=1, maximum=65536)
    grad_accum: int = option(1, "gradient accumulation steps", minimum=1, maximum=65536)
    learning_rate: float | None = option(
        None,
        "peak AdamW learning rate (cosine schedule)",
        above=0,
        maximum=10,
        default_text=f"{FINE_TUNE_LEARNING_RATE:g} when fine-tuning (--init-from base or a folder), "
        f"{NEW_MODEL_LEARNING_RATE:g} for a new model",
    )
    epochs: float | None = option(
        None,
        "passes over the training data (ignored when --max-steps is given)",
        above=0,
        maximum=MAX_EPOCHS,
        default_text=f"{FINE_TUNE_EPOCHS:g} when fine-tuning, {NEW_MODEL_EPOCHS:g} for a new model",
    )
    max_steps: int = option(
        -1, "total optimizer steps (-1: use --epochs; otherwise 1 or more)", minimum=-1, maximum=MAX_STEPS
    )
    warmup_ratio: float = option(0.05, "share of steps for linear warm-up", minimum=0, maximum=1)
    weight_decay: float = option(0.01, "AdamW weight decay", minimum=0, maximum=10)
    eval_steps: int = option(50, "evaluate every N steps", minimum=1)
    save_steps: int = option(50, "checkpoint every N steps", minimum=1)
    save_total_limit: int = option(2, "keep at most this many checkpoints", minimum=1)
    logging_steps: int = option(10, "log every N steps", minimum=1)
    validation_fraction: float = option(
        0.1, "share of entries held out (split by entry, deterministic)", minimum=0, below=1
    )
    on_overflow: str = option(
        "unknown",
        "'unknown' maps topics/contexts beyond the embedding rows to id 0 (with a warning); 'error' stops instead",
        choices=("unknown", "error"),
    )
    seed: int = option(42, "random seed (data order, init, dropout)")
    threads: int = threads_option()
    bf16: bool = option(False, "bf16 autocast (state and decays stay fp32)")
    tensorboard: bool = option(False, "also log to TensorBoard (under OUTPUT/runs)")
    gradient_checkpointing: bool = option(False, "trade compute for memory")
    keep_best: bool = option(
        True,
        "save the weights with the lowest validation loss (OUTPUT/best) and make them the final model; a small "
        "corpus overfits long before the last step",
    )


def train(options: TrainOptions | None = None, /, *, callbacks: Sequence = (), **overrides) -> dict:
    """Train, evaluate and save to OUTPUT/model; returns the final evaluation metrics. `callbacks` are extra
    `TrainerCallback`s (e.g. a test that kills the run at a given step)."""
    from transformers import set_seed
    from transformers.utils import logging as hf_logging

    o = TrainOptions.build(options, overrides)
    output = _check_inputs(o)
    set_threads(o.threads)
    set_seed(o.seed)
    hf_logging.disable_progress_bar()  # no "Writing model shards" bars in the training log
    entries = read_dialogues(data_paths(o.data))
    if o.validation_data:
        train_entries, val_entries = entries, read_dialogues(data_paths(o.validation_data))
        entries = [*entries, *val_entries]
    else:
        train_entries, val_entries = split_entries(entries, o.validation_fraction, o.seed)
    if not train_entries:
        raise UserError("no training data: every entry went to validation (lower --validation-fraction)")
    text_lines = read_text_lines(o.text or [])
    vocabs = None if init_folder(o.init_from) else _vocabularies(o, train_entries)  # overflow errors first
    keep = [Path(o.tokenizer)] if o.tokenizer else []
    if not o.resume and not o.overwrite:
        refuse_other_run(output, keep)  # checked again under the lock; refused here, nothing is created
    args = _arguments(o, output, evaluate=bool(val_entries))
    held: dict = {}

    def prepare() -> tuple[RunPlan, str]:
        plan, held["lock"] = prepare_run(output, o.resume, o.overwrite, keep=keep)
        if not plan.resume_from:
            write_options(o, output)
        return plan, str(tokenizer_folder(o, plan, output, train_entries, text_lines))

    try:
        plan, tokenizer_dir = on_main_process(prepare)  # every process then reads what the main one decided
        tok = load_tokenizer(tokenizer_dir)
        return _run(o, args, output, plan, tok, vocabs, (entries, train_entries, val_entries), text_lines, callbacks)
    finally:
        if "lock" in held:
            held["lock"].release()


def write_options(o: TrainOptions, output: Path) -> None:
    """OUTPUT/options.json: every option this run resolved, so `ringan train --config OUTPUT/options.json` replays
    it (the folder choices `--resume`/`--overwrite` are left out: they say what to do with OUTPUT, not the run)."""
    import json

    from ..files import write_text_atomically
    from ..options import option_fields

    values = {name: getattr(o, name) for name in option_fields(TrainOptions) if name not in ("resume", "overwrite")}
    values["learning_rate"], values["epochs"] = learning_rate(o), epochs(o)
    text = json.dumps(values, indent=1, ensure_ascii=False) + "\n"
    write_text_atomically(output / OPTIONS_FILE, text, "the run's options")


# the options that shape a new model: refused with a model to start from, which brings its own
NEW_MODEL_OPTIONS = (
    "attention_type", "hidden_size", "num_layers", "num_heads", "intermediate_size", "conditioning", "num_topics",
    "num_contexts", "dropout", "vocab_size",
)  # fmt: skip


def _check_inputs(o: TrainOptions) -> Path:
    """What can be refused before anything is read or written: the options together, the input folders."""
    from ..loading import check_checkpoint
    from ..modeling.configuration_ringan import RinganConfig

    if o.resume and o.overwrite:
        raise UserError("--resume and --overwrite: choose one (continue the run, or replace it)")
    if not o.output.strip():
        raise OptionError("--output", "expected a folder name", "''")
    if o.validation_data and o.validation_fraction != default_of(TrainOptions, "validation_fraction"):
        raise UserError("--validation-data and --validation-fraction: choose one (a file to validate on, or a share)")
    if o.max_steps == 0:
        raise OptionError("--max-steps", f"expected -1 (use --epochs) or an integer in [1, {MAX_STEPS}]", "0")
    if o.resume and o.resume != "auto":
        if not (Path(o.resume) / "trainer_state.json").is_file():
            raise UserError(f"--resume {o.resume}: not a complete checkpoint folder (no trainer_state.json)")
        check_checkpoint(o.resume)
    if o.tensorboard:
        require_extra("tensorboard", ("tensorboard",))
    start = init_folder(o.init_from)
    if start is not None:
        check_saved_model(start)
        given = [flag(name) for name in NEW_MODEL_OPTIONS if getattr(o, name) != default_of(TrainOptions, name)]
        if given:
            raise UserError(
                f"{' '.join(given)} with --init-from {o.init_from}: the model's sizes come from it; "
                "pass --init-from none to train a new model of these sizes"
            )
        if o.tokenizer:
            raise UserError(f"--tokenizer with --init-from {o.init_from}: the model brings its own tokenizer")
    if o.tokenizer:
        load_tokenizer(o.tokenizer)
    try:
        RinganConfig(**model_sizes(o), vocab_size=o.vocab_size)
    except ValueError as err:
        raise UserError(f"model options: {err}") from None
    output = Path(o.output)
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output}: exists and is not a folder")
    return output


def _vocabularies(o: TrainOptions, train_entries) -> tuple[LabelVocab, LabelVocab]:
    import warnings

    try:
        with warnings.catch_warnings():
            if o.conditioning != "ids":  # the id tables are not read by this model: that most Topik miss them is noise
                warnings.simplefilter("ignore", UserWarning)
            topics = LabelVocab.build([e.topic for e in train_entries], o.num_topics, "topics", o.on_overflow)
            contexts = LabelVocab.build([e.context for e in train_entries], o.num_contexts, "contexts", o.on_overflow)
    except ValueError as err:
        raise UserError(
            str(err).replace("num_topics", "--num-topics").replace("num_contexts", "--num-contexts")
        ) from None
    return topics, contexts


def learning_rate(o: TrainOptions) -> float:
    """`--learning-rate`, or the default measured for what the run starts from (experiments/finetune_lr.py)."""
    if o.learning_rate is not None:
        return o.learning_rate
    return FINE_TUNE_LEARNING_RATE if init_folder(o.init_from) else NEW_MODEL_LEARNING_RATE


def epochs(o: TrainOptions) -> float:
    """`--epochs`, or the default for what the run starts from, as `learning_rate`."""
    if o.epochs is not None:
        return o.epochs
    return FINE_TUNE_EPOCHS if init_folder(o.init_from) else NEW_MODEL_EPOCHS


def _arguments(o: TrainOptions, output: Path, evaluate: bool):
    from ..training import training_arguments

    args = training_arguments(
        output,
        batch_size=o.batch_size,
        grad_accum=o.grad_accum,
        learning_rate=learning_rate(o),
        weight_decay=o.weight_decay,
        epochs=epochs(o),
        max_steps=o.max_steps,
        logging_steps=o.logging_steps,
        eval_steps=o.eval_steps if evaluate else None,
        save_steps=o.save_steps,
        save_total_limit=o.save_total_limit,
        seed=o.seed,
        bf16=o.bf16,
        tensorboard=o.tensorboard,
    )
    _ = args.world_size  # sets up torch.distributed under torchrun / accelerate launch
    return args


def _run(o, args, output: Path, plan: RunPlan, tok, vocabs, splits, text_lines, callbacks):
    import datasets

    from ..runs import checkpoint_step, read_run, write_run
    from ..trainer import CSVLoggerCallback, RinganTrainer
    from ..training import DialogueCollator, entry_to_examples, pack_examples, text_to_examples

    entries, train_entries, val_entries = splits
    model, topics, contexts = build_model(o, plan, tok, vocabs, train_entries)
    train_examples = [x for e in train_entries for x in entry_to_examples(e, tok, topics, contexts, o.max_length)]
    train_examples += text_to_examples(text_lines, tok, o.max_length)
    if o.pack:
        train_examples = pack_examples(train_examples, o.max_length)
    eval_examples = [x for e in val_entries for x in entry_to_examples(e, tok, topics, contexts, o.max_length)]

    # the step count the Trainer will run: each of `world` processes takes its own batches of the data
    world = args.world_size
    batches = math.ceil(math.ceil(len(train_examples) / o.batch_size) / world)
    steps_per_epoch = max(math.ceil(batches / o.grad_accum), 1)
    total_steps = o.max_steps if o.max_steps > 0 else math.ceil(steps_per_epoch * epochs(o))
    args.warmup_steps = math.ceil(o.warmup_ratio * total_steps)
    main = args.process_index == 0
    done = checkpoint_step(plan.resume_from) if plan.resume_from else 0
    if done >= total_steps and (output / "model" / "config.json").is_file():
        if main:
            print(f"resume: {output} is finished (step {done} of {total_steps}; the model is in {output / 'model'})")
        return read_run(output).get("metrics", {})

    if plan.resume_from and main:
        write_options(o, output)  # the options that finish the run (a resumed run may be given more steps)
    if o.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    trainer = RinganTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(train_examples),
        eval_dataset=datasets.Dataset.from_list(eval_examples) if eval_examples else None,
        data_collator=DialogueCollator(tok.pad_token_id, model.config.conditioning),
        processing_class=tok,  # each checkpoint carries its tokenizer
        eval_examples=eval_examples or None,
        best_dir=output / "best" if (eval_examples and o.keep_best) else None,
        run_id=plan.run_id,
        callbacks=[CSVLoggerCallback(output / "metrics.csv"), *callbacks],
    )
    import torch

    n_params = sum(p.numel() for p in model.parameters())
    if main:
        print(
            f"train: {n_params / 1e6:.2f}M parameters ({model.config.attention_type}), {len(train_entries)} train / "
            f"{len(val_entries)} validation entries, {len(train_examples)} sequences, {total_steps} steps "
            f"({args.warmup_steps} warm-up) on {world} process{'es' if world > 1 else ''} x batch {o.batch_size}"
            f"{f' x {o.grad_accum} accumulated' if o.grad_accum > 1 else ''}, {torch.get_num_threads()} threads"
        )
    if done >= total_steps:  # the last checkpoint is the last step: only the final model is left to save
        from safetensors.torch import load_file

        trainer.model.load_state_dict(load_file(str(Path(plan.resume_from) / "model.safetensors")))
        trainer.state.global_step = done
    else:
        try:
            trainer.train(resume_from_checkpoint=plan.resume_from)
            trainer.check_finite()  # the last step's update: never saved as the final model
        except BaseException:
            close_progress_bars(trainer)  # an error line after the bar, not inside it
            raise
    metrics = trainer.evaluate() if eval_examples else {}
    if trainer.best is not None and trainer.best["eval_loss"] < metrics.get("eval_loss", float("inf")):
        from safetensors.torch import load_file

        # a small corpus overfits: the model we keep is the one that did best on held-out entries
        trainer.model.load_state_dict(load_file(str(output / "best" / "model.safetensors")))
        metrics = trainer.evaluate(metric_key_prefix="eval")
        if main:
            print(f"keep-best: the final model is the step-{trainer.best['step']} weights (lowest validation loss)")

    if main:
        base = "Ringan-base, shipped with the ringan package" if o.init_from == "base" else None
        card = model_card(
            model.config,
            n_params,
            entries,
            train_entries,
            val_entries,
            metrics,
            o.data,
            o.text,
            base,
            model_id=str(output / "model"),
        )
        save_final_model(trainer, tok, train_entries, card, output / "model")
        write_run(output, finished=True, global_step=trainer.state.global_step, metrics=metrics)
        if metrics:
            print(
                f"eval: loss {metrics['eval_loss']:.4f}, perplexity {metrics['eval_perplexity']:.2f}, "
                f"bits/byte {metrics['eval_bits_per_byte']:.4f} on {len(val_entries)} held-out entries"
            )
        print(f"saved: {output / 'model'}")
    return metrics
