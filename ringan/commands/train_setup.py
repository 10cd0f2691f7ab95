"""What a `ringan train` run starts from and ends with: its tokenizer (shared by every process), its model (new,
fine-tuned from a saved one, or a resumed checkpoint's), and the final model folder with its generation config."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..data import UNKNOWN, LabelVocab
from ..defaults import SAMPLING_DEFAULTS
from ..loading import TOPIC_CONTEXTS_FILE, check_model_folder, load_model
from ..runs import TOKENIZER_DIR, RunPlan
from .common import init_folder


def model_sizes(o) -> dict:
    """The model options of `ringan train` as `RinganConfig` fields."""
    return dict(
        hidden_size=o.hidden_size,
        num_hidden_layers=o.num_layers,
        num_attention_heads=o.num_heads,
        intermediate_size=o.intermediate_size,
        num_topics=o.num_topics,
        num_contexts=o.num_contexts,
        attention_type=o.attention_type,
        conditioning=o.conditioning,
        dropout=o.dropout,
        conditioning_dropout=o.conditioning_dropout,
    )


def tokenizer_folder(o, plan: RunPlan, output: Path, train_entries, text_lines) -> Path:
    """Where every process reads the run's tokenizer: a resumed checkpoint's (or the run's), `--init-from`'s,
    `--tokenizer`, or one the main process trains now and saves to OUTPUT/tokenizer."""
    from ..files import save_atomically
    from ..tokenization import train_tokenizer

    if plan.resume_from:
        for folder in (Path(plan.resume_from), Path(plan.resume_from).parent / TOKENIZER_DIR):
            if (folder / "tokenizer.json").is_file():
                return folder
    if init_folder(o.init_from):
        return check_model_folder(init_folder(o.init_from))
    if o.tokenizer:
        return Path(o.tokenizer)
    if not (output / TOKENIZER_DIR / "tokenizer.json").is_file():  # a first attempt's tokenizer is reused
        tok = train_tokenizer(train_entries, o.vocab_size, text_lines)
        save_atomically(lambda folder: tok.save_pretrained(str(folder)), output / TOKENIZER_DIR, "the tokenizer")
    return output / TOKENIZER_DIR


def close_progress_bars(trainer) -> None:
    from transformers.trainer_callback import ProgressCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ProgressCallback) and callback.training_bar is not None:
            callback.training_bar.close()
            callback.training_bar = None


def build_model(o, plan: RunPlan, tok, vocabs, train_entries):
    """`(model, topics, contexts)`: a resumed checkpoint's configuration (its weights are loaded by the Trainer),
    `--init-from`'s model (its ids kept, new names appended; a quantized one dequantized to fp32), or a new one."""
    import ringan

    from ..loading import read_model_config

    if plan.resume_from:
        config = read_model_config(plan.resume_from)
        config.quantization = None
        model = ringan.RinganForCausalLM(config)
        return model, LabelVocab(config.topic_names or [UNKNOWN]), LabelVocab(config.context_names or [UNKNOWN])
    if init_folder(o.init_from):
        model, _ = load_model(init_folder(o.init_from), for_training=True)
        config = model.config
        # a training setting, not an architecture one: fine-tuning uses this run's (the measured 0.3 by default)
        config.conditioning_dropout = model.model.conditioning.dropout = o.conditioning_dropout
        warn = config.conditioning == "ids"  # a text-conditioned model reads any Topik/Konteks: ids are unused
        config.topic_names = extend_names(
            config.topic_names, [e.topic for e in train_entries], config.num_topics, "topics", warn
        )
        config.context_names = extend_names(
            config.context_names, [e.context for e in train_entries], config.num_contexts, "contexts", warn
        )
        return model, LabelVocab(config.topic_names), LabelVocab(config.context_names)
    topics, contexts = vocabs
    config = ringan.RinganConfig(
        vocab_size=len(tok),
        **model_sizes(o),
        topic_names=topics.names,
        context_names=contexts.names,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return ringan.RinganForCausalLM(config), topics, contexts


def extend_names(existing: list[str], values: Sequence[str], rows: int, what: str, warn: bool = True) -> list[str]:
    """Keep every existing name at its id; append new names while rows remain (the rest map to 0); `warn`: say
    so when some do not fit."""
    names = list(existing) if existing else [UNKNOWN]
    new = [v for v in dict.fromkeys(values) if v not in names]
    room = rows - len(names)
    if len(new) > room and warn:
        warnings.warn(
            f"the data holds {len(new)} new {what} but the model has room for {max(room, 0)} more: "
            f"the rest use id 0 (unknown)",
            stacklevel=2,
        )
    return names + new[: max(room, 0)]


def save_final_model(trainer, tok, train_entries, card: str, folder: Path) -> None:
    """The model folder `ringan generate/chat/push` and plain transformers read, written atomically."""
    from transformers import GenerationConfig

    from ..files import save_atomically
    from ..tokenization import end_of_turn_ids

    # the sampling defaults of `ringan generate`, so plain `model.generate()` decodes the same way, and stops at the
    # end of the reply: `</s>` and every newline token end it (an utterance is one line)
    trainer.model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=end_of_turn_ids(tok),
        pad_token_id=tok.pad_token_id,
        do_sample=True,
        **SAMPLING_DEFAULTS,
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

    save_atomically(save, folder, "the final model", "; the checkpoints are intact")
