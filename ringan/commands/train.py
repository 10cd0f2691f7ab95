"""`ringan train`: train a model on dialogue files with the HF Trainer and save it with its tokenizer and card."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import UNKNOWN, LabelVocab, read_dialogues, split_entries
from ..errors import UserError
from ..modeling.configuration_ringan import ATTENTION_TYPES, RinganConfig
from ..options import Options, option
from .common import (
    TOPIC_CONTEXTS_FILE,
    data_option,
    data_paths,
    load_model,
    load_tokenizer,
    read_text_lines,
    set_threads,
    threads_option,
)
from .generate import SamplingOptions
from .hub import model_card

NEW = ", new models only"


@dataclass(frozen=True, kw_only=True)
class TrainOptions(Options):
    """Train a Ringan model on dialogue files with the Hugging Face Trainer (from scratch or from a checkpoint).

    Evaluates perplexity and bits per byte on the validation split at every eval, logs to
    OUTPUT/metrics.csv (and TensorBoard with --tensorboard), keeps complete checkpoints in OUTPUT,
    and saves the final model with its tokenizer and model card to OUTPUT/model.
    """

    data: list[str] | None = data_option()
    output: str = option("runs/ringan", "run folder (checkpoints, metrics.csv, model/)")
    tokenizer: str | None = option(
        None, "a saved tokenizer folder", default_text="train one on the data, saved in OUTPUT/model"
    )
    text: list[str] | None = option(
        None, "plain-text files mixed in (one paragraph per line), e.g. prose for pre-training"
    )
    init_from: str | None = option(None, "a saved model folder to continue from (fine-tuning); its tokenizer is reused")
    resume: str | None = option(
        None,
        "'auto' (latest checkpoint in OUTPUT, if any) or a checkpoint folder: restores optimizer, scheduler, RNG and "
        "data position",
    )
    # the model's defaults are RinganConfig's: one definition for the CLI and for Python
    attention_type: str = option(RinganConfig.attention_type, "the sequence mixer" + NEW, choices=ATTENTION_TYPES)
    hidden_size: int = option(RinganConfig.hidden_size, "model width" + NEW, minimum=1)
    num_layers: int = option(RinganConfig.num_hidden_layers, "decoder layers" + NEW, minimum=1)
    num_heads: int = option(RinganConfig.num_attention_heads, "attention heads" + NEW, minimum=1)
    intermediate_size: int = option(RinganConfig.intermediate_size, "feed-forward width" + NEW, minimum=1)
    num_topics: int = option(RinganConfig.num_topics, "topic embedding rows incl. row 0 = unknown" + NEW, minimum=1)
    num_contexts: int = option(
        RinganConfig.num_contexts, "context embedding rows incl. row 0 = unknown" + NEW, minimum=1
    )
    dropout: float = option(
        RinganConfig.dropout, "dropout on embeddings and residual branches" + NEW, minimum=0, below=1
    )
    vocab_size: int = option(10000, "tokenizer vocabulary when one is trained here", minimum=1)
    max_length: int = option(1024, "tokens per training sequence; longer entries are split, never dropped", minimum=2)
    pack: bool = option(False, "pack several entries per sequence (per-token topic/context ids)")
    batch_size: int = option(8, "sequences per device per step", minimum=1)
    grad_accum: int = option(1, "gradient accumulation steps", minimum=1)
    learning_rate: float = option(3e-3, "peak AdamW learning rate (cosine schedule)", above=0)
    epochs: float = option(10.0, "passes over the training data (ignored when max_steps > 0)", above=0)
    max_steps: int = option(-1, "total optimizer steps (-1: use epochs)")
    warmup_ratio: float = option(0.05, "share of steps for linear warm-up", minimum=0, maximum=1)
    weight_decay: float = option(0.01, "AdamW weight decay", minimum=0)
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
    import datasets
    from transformers import set_seed

    from ..trainer import CSVLoggerCallback, RinganTrainer
    from ..training import DialogueCollator, entry_to_examples, pack_examples, text_to_examples, training_arguments

    o = TrainOptions.build(options, overrides)
    set_threads(o.threads)
    set_seed(o.seed)
    output = Path(o.output)
    entries = read_dialogues(data_paths(o.data))
    train_entries, val_entries = split_entries(entries, o.validation_fraction, o.seed)
    text_lines = read_text_lines(o.text or [])
    resume_from = _resume_from(o.resume, output)
    model, tok, topics, contexts = _model_and_tokenizer(o, train_entries, text_lines)

    train_examples = [x for e in train_entries for x in entry_to_examples(e, tok, topics, contexts, o.max_length)]
    train_examples += text_to_examples(text_lines, tok, o.max_length)
    if o.pack:
        train_examples = pack_examples(train_examples, o.max_length)
    eval_examples = [x for e in val_entries for x in entry_to_examples(e, tok, topics, contexts, o.max_length)]
    if not train_examples:
        raise UserError("no training data: every entry went to validation (lower --validation-fraction)")

    steps_per_epoch = math.ceil(len(train_examples) / (o.batch_size * o.grad_accum))
    total_steps = o.max_steps if o.max_steps > 0 else math.ceil(steps_per_epoch * o.epochs)
    args = training_arguments(
        output,
        batch_size=o.batch_size,
        grad_accum=o.grad_accum,
        learning_rate=o.learning_rate,
        weight_decay=o.weight_decay,
        epochs=o.epochs,
        max_steps=o.max_steps,
        warmup_steps=int(o.warmup_ratio * total_steps),
        logging_steps=o.logging_steps,
        eval_steps=o.eval_steps if eval_examples else None,
        save_steps=o.save_steps,
        save_total_limit=o.save_total_limit,
        seed=o.seed,
        bf16=o.bf16,
        tensorboard=o.tensorboard,
    )
    if o.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    trainer = RinganTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(train_examples),
        eval_dataset=datasets.Dataset.from_list(eval_examples) if eval_examples else None,
        data_collator=DialogueCollator(tok.pad_token_id, model.config.conditioning),
        eval_examples=eval_examples or None,
        best_dir=output / "best" if (eval_examples and o.keep_best) else None,
        callbacks=[CSVLoggerCallback(output / "metrics.csv"), *callbacks],
    )
    n_params = sum(p.numel() for p in model.parameters())
    if trainer.is_world_process_zero():
        print(
            f"train: {n_params / 1e6:.2f}M parameters ({model.config.attention_type}), {len(train_entries)} train / "
            f"{len(val_entries)} validation entries, {len(train_examples)} sequences, {total_steps} steps, "
            f"{torch.get_num_threads()} threads"
        )
    trainer.train(resume_from_checkpoint=resume_from)
    metrics = trainer.evaluate() if eval_examples else {}
    if trainer.best is not None and trainer.best["eval_loss"] < metrics.get("eval_loss", float("inf")):
        from safetensors.torch import load_file

        # a small corpus overfits: the model we keep is the one that did best on held-out entries
        trainer.model.load_state_dict(load_file(str(output / "best" / "model.safetensors")))
        metrics = trainer.evaluate(metric_key_prefix="eval")
        if trainer.is_world_process_zero():
            print(f"keep-best: the final model is the step-{trainer.best['step']} weights (lowest validation loss)")

    if trainer.is_world_process_zero():
        card = model_card(model.config, n_params, entries, train_entries, val_entries, metrics, o.data, o.text)
        _save_final_model(trainer, tok, train_entries, card, output / "model")
        if metrics:
            print(
                f"eval: loss {metrics['eval_loss']:.4f}, perplexity {metrics['eval_perplexity']:.2f}, "
                f"bits/byte {metrics['eval_bits_per_byte']:.4f} on {len(val_entries)} held-out entries"
            )
        print(f"saved: {output / 'model'}")
    return metrics


def _resume_from(resume: str | None, output: Path) -> str | None:
    """The checkpoint folder `--resume` names (`auto`: the run's latest complete one, if any)."""
    from ..training import complete_checkpoints

    if not resume:
        return None
    if resume == "auto":
        found = complete_checkpoints(output)
        resume_from = str(found[-1]) if found else None
        print(
            f"resume: {'from ' + resume_from if resume_from else 'no checkpoint in ' + str(output) + ', starting fresh'}"
        )
        return resume_from
    if not (Path(resume) / "trainer_state.json").is_file():
        raise UserError(f"{resume}: not a complete checkpoint folder (no trainer_state.json)")
    return resume


def _model_and_tokenizer(o: TrainOptions, train_entries, text_lines: list[str]):
    """`(model, tokenizer, topics, contexts)`: from `--init-from` (its ids kept, new names appended) or new."""
    import ringan

    from ..tokenization import train_tokenizer

    if o.init_from:
        model, tok = load_model(o.init_from, for_training=True)
        config = model.config
        config.topic_names = _extend_names(
            config.topic_names, [e.topic for e in train_entries], config.num_topics, "topics"
        )
        config.context_names = _extend_names(
            config.context_names, [e.context for e in train_entries], config.num_contexts, "contexts"
        )
        return model, tok, LabelVocab(config.topic_names), LabelVocab(config.context_names)
    tok = load_tokenizer(o.tokenizer) if o.tokenizer else train_tokenizer(train_entries, o.vocab_size, text_lines)
    topics = LabelVocab.build([e.topic for e in train_entries], o.num_topics, "topics", o.on_overflow)
    contexts = LabelVocab.build([e.context for e in train_entries], o.num_contexts, "contexts", o.on_overflow)
    config = ringan.RinganConfig(
        vocab_size=len(tok),
        hidden_size=o.hidden_size,
        num_hidden_layers=o.num_layers,
        num_attention_heads=o.num_heads,
        intermediate_size=o.intermediate_size,
        num_topics=o.num_topics,
        num_contexts=o.num_contexts,
        attention_type=o.attention_type,
        dropout=o.dropout,
        topic_names=topics.names,
        context_names=contexts.names,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return ringan.RinganForCausalLM(config), tok, topics, contexts


def _extend_names(existing: list[str], values: Sequence[str], rows: int, what: str) -> list[str]:
    """Keep every existing name at its id; append new names while rows remain (the rest map to 0)."""
    names = list(existing) if existing else [UNKNOWN]
    new = [v for v in dict.fromkeys(values) if v not in names]
    room = rows - len(names)
    if len(new) > room:
        warnings.warn(
            f"the data holds {len(new)} new {what} but the model has room for {max(room, 0)} more: "
            f"the rest use id 0 (unknown)",
            stacklevel=2,
        )
    return names + new[: max(room, 0)]


def _save_final_model(trainer, tok, train_entries, card: str, folder: Path) -> None:
    """The model folder `ringan generate/chat/push` and plain transformers read, written atomically."""
    from transformers import GenerationConfig

    from ..training import save_atomically

    # the sampling defaults of `ringan generate`, so plain `model.generate()` decodes the same way
    sampling = SamplingOptions()
    trainer.model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        max_new_tokens=sampling.max_new_tokens,
        **sampling.generate_kwargs(),
    )
    topic_contexts = {}
    for e in train_entries:
        topic_contexts.setdefault(e.topic, e.context)

    def save(staging: Path) -> None:
        trainer.model.save_pretrained(str(staging))
        tok.save_pretrained(str(staging))
        (staging / TOPIC_CONTEXTS_FILE).write_text(
            json.dumps(topic_contexts, ensure_ascii=False, indent=1), encoding="utf-8"
        )
        (staging / "README.md").write_text(card, encoding="utf-8")

    save_atomically(save, folder)
