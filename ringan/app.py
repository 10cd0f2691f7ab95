"""What the CLI verbs do. Each `*_job` function is callable from Python too."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import torch

from .cli import UserError
from .data import (
    UNKNOWN,
    Entry,
    LabelVocab,
    Turn,
    corpus_statistics,
    default_corpus_path,
    read_dialogues,
    render_entry,
    split_entries,
)

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
TOPIC_CONTEXTS_FILE = "topic_contexts.json"


# ------------------------------------------------------------------------------------------- helpers


def verb_defaults(verb: str) -> dict:
    """The defaults of a CLI verb's options (one place defines them: the typed functions in `cli.py`)."""
    import inspect

    from .cli import VERBS

    return {p.name: p.default for p in inspect.signature(VERBS[verb]).parameters.values()}


def set_threads(threads: int) -> int:
    """Use `threads` torch threads (0 = torch's default). Returns the count in use."""
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def data_paths(data: Sequence[str] | None) -> list[Path]:
    paths = [Path(p) for p in data] if data else [default_corpus_path()]
    for p in paths:
        if not p.exists():
            raise UserError(f"{p}: no such dialogue file or folder")
    return paths


def read_text_lines(files: Sequence[str]) -> list[str]:
    lines: list[str] = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise UserError(f"{path}: no such text file")
        try:
            lines += path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            line = path.read_bytes()[: err.start].count(b"\n") + 1
            raise UserError(f"{path}:{line}: not valid UTF-8; save the file as UTF-8") from None
    return lines


def load_tokenizer(folder: str | Path):
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise UserError(f"{folder}: no tokenizer.json here (train one with `ringan tokenizer`)")
    return AutoTokenizer.from_pretrained(str(folder))


def load_model(folder: str | Path, for_training: bool = False):
    """A saved Ringan model and its tokenizer, with the checks a user needs when something is missing."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    import ringan  # noqa: F401  (registers the auto classes)

    hf_logging.disable_progress_bar()  # keep generated text and tables clean
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such model folder")
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{folder}: model folder is missing {', '.join(missing)} (was it saved by `ringan train`?)")
    tokenizer = load_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    if len(tokenizer) > model.config.vocab_size:
        raise UserError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
            f"{model.config.vocab_size}: they do not belong together"
        )
    model.train(for_training)
    return model, tokenizer


def resolve_topic(config, topic: str | None) -> tuple[int, str]:
    names = config.topic_names or [UNKNOWN]
    if topic is None:
        if len(names) < 2:
            raise UserError("this model knows no topics: pass --topic")
        return 1, names[1]
    if topic.isdigit():
        index = int(topic)
        if not 0 <= index < len(names):
            raise UserError(f"topic id {index} is out of range: the model knows ids 0..{len(names) - 1}")
        return index, names[index]
    if topic in names:
        return names.index(topic), topic
    known = "; ".join(f"{i}: {n}" for i, n in enumerate(names) if i)
    raise UserError(f"unknown topic {topic!r}. Known topics: {known}")


def resolve_context(model_dir: str | Path, config, topic: str, context: str | None) -> tuple[int, str]:
    names = config.context_names or [UNKNOWN]
    if context is None:
        mapping_file = Path(model_dir) / TOPIC_CONTEXTS_FILE
        mapping = json.loads(mapping_file.read_text(encoding="utf-8")) if mapping_file.is_file() else {}
        if topic not in mapping:
            raise UserError(f"no Konteks is known for topic {topic!r}: pass --context")
        context = mapping[topic]
    context = " ".join(context.split())
    return (names.index(context) if context in names else 0), context


def parse_turns(turns: Sequence[str] | None) -> list[Turn]:
    parsed = []
    for raw in turns or []:
        name, sep, text = raw.partition(":")
        if not sep or not name.strip() or not text.strip():
            raise UserError(f"--turn {raw!r}: expected 'Name: text'")
        parsed.append(Turn(name.strip(), text.strip()))
    return parsed


def prompt_text(topic: str, context: str, turns: Sequence[Turn], speaker: str) -> str:
    """The training layout up to `Speaker:` (the same text as the tokenizer's chat template)."""
    text = f"==== Topik: {topic} ====\n\nKonteks: {context}\n\n"
    text += "".join(f"{t.speaker}: {t.text}\n\n" for t in turns)
    return text + f"{speaker}:"


def sampling_kwargs(greedy: bool, temperature: float, top_k: int, top_p: float, repetition_penalty: float) -> dict:
    if greedy:
        return {"do_sample": False, "repetition_penalty": repetition_penalty}
    return {
        "do_sample": True,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "repetition_penalty": repetition_penalty,
    }


def clean_reply(text: str) -> str:
    """The generated utterance: its first line, whitespace folded."""
    return " ".join(text.strip().split("\n")[0].split())


# ----------------------------------------------------------------------------------------- tokenizer


def train_tokenizer_job(data, output, vocab_size, text, min_frequency, entries: Sequence[Entry] | None = None):
    from .tokenization import characters_per_token, train_tokenizer

    entries = list(entries) if entries is not None else read_dialogues(data_paths(data))
    tok = train_tokenizer(
        entries, vocab_size=vocab_size, extra_texts=read_text_lines(text), min_frequency=min_frequency
    )
    tok.save_pretrained(output)
    stats = corpus_statistics(entries)
    print(
        f"tokenizer: {len(tok)} tokens, {characters_per_token(tok, entries):.2f} characters/token on "
        f"{stats['entries']} entries ({stats['turns']} turns, {stats['characters']:,} characters); saved to {output}"
    )
    return tok


# --------------------------------------------------------------------------------------------- train


def _extend_names(existing: list[str], values: Sequence[str], rows: int, what: str) -> list[str]:
    """Keep every existing name at its id; append new names while rows remain (the rest map to 0)."""
    names = list(existing) if existing else [UNKNOWN]
    new = [v for v in dict.fromkeys(values) if v not in names]
    room = rows - len(names)
    if len(new) > room:
        import warnings

        warnings.warn(
            f"the data holds {len(new)} new {what} but the model has room for {max(room, 0)} more: "
            f"the rest use id 0 (unknown)",
            stacklevel=2,
        )
    return names + new[: max(room, 0)]


def train_job(**options) -> dict:
    """See `ringan train --help` (the options and their defaults are `cli.train`'s). Returns the final
    evaluation metrics."""
    import datasets
    from transformers import GenerationConfig, set_seed

    import ringan

    from .tokenization import train_tokenizer
    from .training import (
        CSVLoggerCallback,
        DialogueCollator,
        KillAtStepCallback,
        RinganTrainer,
        complete_checkpoints,
        entry_to_examples,
        pack_examples,
        save_atomically,
        text_to_examples,
        training_arguments,
    )

    o = SimpleNamespace(**{**verb_defaults("train"), **options})
    set_threads(o.threads)
    set_seed(o.seed)
    o.output = Path(o.output)
    if o.max_length < 2:
        raise UserError("--max-length must be at least 2")
    entries = read_dialogues(data_paths(o.data))
    train_entries, val_entries = split_entries(entries, o.validation_fraction, o.seed)
    text_lines = read_text_lines(o.text or [])

    resume_from = None
    if o.resume:
        if o.resume == "auto":
            found = complete_checkpoints(o.output)
            resume_from = str(found[-1]) if found else None
            print(
                f"resume: {'from ' + resume_from if resume_from else 'no checkpoint in ' + str(o.output) + ', starting fresh'}"
            )
        else:
            if not (Path(o.resume) / "trainer_state.json").is_file():
                raise UserError(f"{o.resume}: not a complete checkpoint folder (no trainer_state.json)")
            resume_from = o.resume

    if o.init_from:
        model, tok = load_model(o.init_from, for_training=True)
        config = model.config
        config.topic_names = _extend_names(
            config.topic_names, [e.topic for e in train_entries], config.num_topics, "topics"
        )
        config.context_names = _extend_names(
            config.context_names, [e.context for e in train_entries], config.num_contexts, "contexts"
        )
        topics, contexts = LabelVocab(config.topic_names), LabelVocab(config.context_names)
    else:
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
        model = ringan.RinganForCausalLM(config)

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
        o.output,
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
    callbacks = [CSVLoggerCallback(o.output / "metrics.csv")]
    if os.environ.get("RINGAN_TEST_KILL_AT_STEP"):
        callbacks.append(KillAtStepCallback(int(os.environ["RINGAN_TEST_KILL_AT_STEP"])))
    trainer = RinganTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(train_examples),
        eval_dataset=datasets.Dataset.from_list(eval_examples) if eval_examples else None,
        data_collator=DialogueCollator(tok.pad_token_id, config.conditioning),
        eval_examples=eval_examples or None,
        best_dir=o.output / "best" if (eval_examples and o.keep_best) else None,
        callbacks=callbacks,
    )
    n_params = sum(p.numel() for p in model.parameters())
    if trainer.is_world_process_zero():
        print(
            f"train: {n_params / 1e6:.2f}M parameters ({config.attention_type}), {len(train_entries)} train / "
            f"{len(val_entries)} validation entries, {len(train_examples)} sequences, {total_steps} steps, "
            f"{torch.get_num_threads()} threads"
        )
    trainer.train(resume_from_checkpoint=resume_from)
    metrics = trainer.evaluate() if eval_examples else {}
    if trainer.best is not None and trainer.best["eval_loss"] < metrics.get("eval_loss", float("inf")):
        from safetensors.torch import load_file

        # a small corpus overfits: the model we keep is the one that did best on held-out entries
        trainer.model.load_state_dict(load_file(str(o.output / "best" / "model.safetensors")))
        metrics = trainer.evaluate(metric_key_prefix="eval")
        if trainer.is_world_process_zero():
            print(f"keep-best: the final model is the step-{trainer.best['step']} weights (lowest validation loss)")

    if trainer.is_world_process_zero():
        model.generation_config = GenerationConfig(
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            max_new_tokens=120,
            do_sample=True,
            temperature=0.8,
            top_k=50,
            top_p=0.95,
            repetition_penalty=1.1,
        )
        topic_contexts = {}
        for e in train_entries:
            topic_contexts.setdefault(e.topic, e.context)

        def save(folder: Path) -> None:
            trainer.model.save_pretrained(str(folder))
            tok.save_pretrained(str(folder))
            (folder / TOPIC_CONTEXTS_FILE).write_text(
                json.dumps(topic_contexts, ensure_ascii=False, indent=1), encoding="utf-8"
            )
            (folder / "README.md").write_text(
                model_card(config, n_params, entries, train_entries, val_entries, metrics, o.data, o.text),
                encoding="utf-8",
            )

        save_atomically(save, o.output / "model")
        if metrics:
            print(
                f"eval: loss {metrics['eval_loss']:.4f}, perplexity {metrics['eval_perplexity']:.2f}, "
                f"bits/byte {metrics['eval_bits_per_byte']:.4f} on {len(val_entries)} held-out entries"
            )
        print(f"saved: {o.output / 'model'}")
    return metrics


def model_card(config, n_params, entries, train_entries, val_entries, metrics, data, text) -> str:
    stats = corpus_statistics(entries)
    topics = [n for n in (config.topic_names or [])[1:]]
    sources = ", ".join(str(p) for p in (data or ["the corpus shipped with ringan"]))
    metric_lines = (
        f"| validation loss | {metrics['eval_loss']:.4f} |\n| perplexity | {metrics['eval_perplexity']:.2f} |\n"
        f"| bits per byte | {metrics['eval_bits_per_byte']:.4f} |\n"
        if metrics
        else "| (no validation split) | |\n"
    )
    return textwrap.dedent(
        """\
        ---
        library_name: transformers
        language:
        - id
        license: apache-2.0
        pipeline_tag: text-generation
        tags:
        - ringan
        - linear-attention
        - dialogue
        ---

        # Ringan dialogue model

        A small decoder-only language model for Indonesian dialogue: every token's input is
        `token_emb + topic_emb + context_emb`, with RoPE and `{attention}` linear attention, so long
        contexts cost a fixed-size state instead of a growing KV cache.

        | | |
        | --- | --- |
        | parameters | {params:,} |
        | width / layers / heads | {hidden} / {layers} / {heads} |
        | vocabulary | {vocab} |
        | topics / contexts | {n_topics} / {n_contexts} rows (0 = unknown) |
        | training data | {sources}{extra}: {entries} entries, {turns} turns ({n_train} train / {n_val} validation) |
        {metrics}
        ## Usage

        ```python
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO", trust_remote_code=True)  # the config has auto_map
        model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO", trust_remote_code=True)
        messages = [{{"role": "system", "content": "Konteks ..."}}, {{"role": "user", "name": "Kiann", "content": "Halo!"}}]
        ids = tokenizer.apply_chat_template(messages, topic="{topic}", assistant_name="Caecillia",
                                            add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**ids, topic_ids=torch.tensor([1]), max_new_tokens=60,
                             stop_strings=["\\n\\n"], tokenizer=tokenizer)
        print(tokenizer.decode(out[0], skip_special_tokens=True))
        ```

        `topic_ids` / `context_ids` index `config.topic_names` / `config.context_names` (0 = unknown).

        ## Topics

        {topic_list}
        """
    ).format(
        attention=config.attention_type,
        params=n_params,
        hidden=config.hidden_size,
        layers=config.num_hidden_layers,
        heads=config.num_attention_heads,
        vocab=config.vocab_size,
        n_topics=config.num_topics,
        n_contexts=config.num_contexts,
        sources=sources,
        extra=f" + plain text {', '.join(text)}" if text else "",
        entries=stats["entries"],
        turns=stats["turns"],
        n_train=len(train_entries),
        n_val=len(val_entries),
        metrics="| metric (held-out entries) | value |\n| --- | --- |\n" + metric_lines,
        topic=topics[0] if topics else "...",
        topic_list="\n".join(f"{i + 1}. {t}" for i, t in enumerate(topics)) or "(none)",
    )


# ---------------------------------------------------------------------------------------------- eval


@torch.no_grad()
def evaluate_by_speaker(model, tok, entries: Sequence[Entry], max_length: int = 1024) -> dict:
    """Token-level loss on each entry, attributed to the speaker whose turn holds the token."""
    topics = LabelVocab(model.config.topic_names or [UNKNOWN])
    contexts = LabelVocab(model.config.context_names or [UNKNOWN])
    nll: dict[str, float] = {}
    tokens: dict[str, int] = {}
    n_bytes: dict[str, int] = {}
    for entry in entries:
        text = render_entry(entry)
        enc = tok(text, return_offsets_mapping=True)
        ids = enc["input_ids"] + [tok.eos_token_id]
        starts = [start for start, _ in enc["offset_mapping"]] + [len(text)]
        # who owns each character: "(Topik/Konteks)" for the header, then each turn's speaker
        owners, spans, pos = [], [], text.index("\n\n", text.index("Konteks:")) + 2
        spans.append(("(Topik/Konteks)", 0, pos))
        for turn in entry.turns:
            length = len(f"{turn.speaker}: {turn.text}\n\n")
            spans.append((turn.speaker, pos, pos + length))
            pos += length
        for start in starts:
            owners.append(next((s for s, a, b in spans if a <= start < b), spans[-1][0]))
        for name, a, b in spans:
            n_bytes[name] = n_bytes.get(name, 0) + len(text[a:b].encode("utf-8"))
        topic = torch.tensor([topics.id(entry.topic)])
        context = torch.tensor([contexts.id(entry.context)])
        stride = max_length - 1
        for begin in range(0, len(ids) - 1, stride):
            window = torch.tensor([ids[begin : begin + max_length]])
            logits = model(window, topic_ids=topic, context_ids=context, use_cache=False).logits[0, :-1]
            losses = torch.nn.functional.cross_entropy(logits.float(), window[0, 1:], reduction="none")
            for offset, value in enumerate(losses.tolist()):
                owner = owners[begin + offset + 1]
                nll[owner] = nll.get(owner, 0.0) + value
                tokens[owner] = tokens.get(owner, 0) + 1
    return {
        name: {
            "tokens": tokens[name],
            "loss": nll[name] / tokens[name],
            "perplexity": math.exp(min(nll[name] / tokens[name], 50)),
            "bits_per_byte": nll[name] / math.log(2) / max(n_bytes.get(name, 1), 1),
        }
        for name in sorted(tokens, key=lambda n: -tokens[n])
    }


def eval_job(model_dir, data, batch_size=8, max_length=1024, json_output=None, threads=0) -> dict:
    from .training import entry_to_examples, evaluate_examples

    set_threads(threads)
    model, tok = load_model(model_dir)
    entries = read_dialogues(data_paths(data))
    topics = LabelVocab(model.config.topic_names or [UNKNOWN])
    contexts = LabelVocab(model.config.context_names or [UNKNOWN])
    examples = [x for e in entries for x in entry_to_examples(e, tok, topics, contexts, max_length)]
    overall = evaluate_examples(model, examples, batch_size, tok.pad_token_id)
    per_speaker = evaluate_by_speaker(model, tok, entries, max_length)
    print(
        f"eval: {len(entries)} entries, {overall['tokens']} tokens: loss {overall['loss']:.4f}, "
        f"perplexity {overall['perplexity']:.2f}, bits/byte {overall['bits_per_byte']:.4f}"
    )
    print(f"{'speaker':<24} {'tokens':>8} {'loss':>8} {'ppl':>10} {'bits/byte':>10}")
    for name, m in per_speaker.items():
        print(
            f"{name[:24]:<24} {m['tokens']:>8} {m['loss']:>8.4f} {m['perplexity']:>10.2f} {m['bits_per_byte']:>10.4f}"
        )
    result = {"overall": overall, "per_speaker": per_speaker}
    if json_output:
        Path(json_output).write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    return result


# ------------------------------------------------------------------------------------------ generate


def generate_reply(
    model, tok, prompt: str, topic_id: int, context_id: int, max_new_tokens: int, sampling: dict, streamer=None
) -> str:
    enc = tok(prompt, return_tensors="pt")
    out = model.generate(
        **enc,
        topic_ids=torch.tensor([topic_id]),
        context_ids=torch.tensor([context_id]),
        max_new_tokens=max_new_tokens,
        stop_strings=["\n"],  # an utterance is one line
        tokenizer=tok,
        streamer=streamer,
        **sampling,
    )
    return clean_reply(tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))


def generate_job(**options) -> list[Turn]:
    """See `ringan generate --help` (options and defaults: `cli.generate`)."""
    o = SimpleNamespace(**{**verb_defaults("generate"), **options})
    from transformers import TextStreamer, set_seed

    set_threads(o.threads)
    model_dir = o.model
    model, tok = load_model(model_dir)
    topic_id, topic_name = resolve_topic(model.config, o.topic)
    context_id, context_text = resolve_context(model_dir, model.config, topic_name, o.context)
    turns = parse_turns(o.turn)
    names = list(o.speakers or [])
    for t in turns:
        if t.speaker not in names:
            names.append(t.speaker)
    if o.speaker and o.speaker not in names:
        names.append(o.speaker)
    for default in ("Kiann", "Caecillia", "Pembicara"):  # two speakers at least
        if len(names) < 2 and default not in names:
            names.append(default)
    next_speaker = o.speaker or (names[(names.index(turns[-1].speaker) + 1) % len(names)] if turns else names[0])
    set_seed(o.seed)
    sampling = sampling_kwargs(o.greedy, o.temperature, o.top_k, o.top_p, o.repetition_penalty)
    print(f"==== Topik: {topic_name} ====\n\nKonteks: {context_text}\n")
    for t in turns:
        print(f"{t.speaker}: {t.text}\n")
    for _ in range(o.num_turns):
        prompt = prompt_text(topic_name, context_text, turns, next_speaker)
        streamer = None
        if o.stream:
            print(f"{next_speaker}:", end="", flush=True)
            streamer = TextStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        reply = generate_reply(model, tok, prompt, topic_id, context_id, o.max_new_tokens, sampling, streamer)
        if not o.stream:
            print(f"{next_speaker}: {reply}\n")
        elif not reply:
            print()
        turns.append(Turn(next_speaker, reply or "..."))
        next_speaker = names[(names.index(next_speaker) + 1) % len(names)]
    return turns


# ---------------------------------------------------------------------------------------------- chat


class ChatSession:
    """A conversation held in the recurrent cache: each reply feeds only the tokens the state has not seen.

    Text is tokenized in pieces that never end in whitespace (a trailing blank line is kept back and sent
    with the next piece): BPE turns a final "\n\n" into one token that training only shows before `</s>`,
    while inside text it is two "\n" tokens. `save()` writes the transcript and the fixed-size state to one
    safetensors file; `load()` resumes it without re-reading the history.
    """

    def __init__(self, model, tok, topic: str, topic_id: int, context: str, context_id: int, user: str, bot: str):
        self.model, self.tok = model, tok
        self.topic, self.topic_id, self.context, self.context_id = topic, topic_id, context, context_id
        self.user, self.bot = user, bot
        self.turns: list[Turn] = []
        self.token_ids: list[int] = tok(f"==== Topik: {topic} ====\n\nKonteks: {context}")["input_ids"]
        self.pending = "\n\n"  # whitespace that belongs before the next piece of text
        self.cache = None

    @property
    def seen(self) -> int:
        return int(self.cache.seen_tokens[0]) if self.cache is not None else 0

    def reply(self, message: str, max_new_tokens: int, sampling: dict, seed: int, streamer=None) -> str:
        from transformers import set_seed

        from ringan import RinganCache

        self.turns.append(Turn(self.user, " ".join(message.split())))
        piece = f"{self.pending}{self.user}: {self.turns[-1].text}\n\n{self.bot}:"
        self.token_ids += self.tok(piece, add_special_tokens=False)["input_ids"]
        if self.cache is None:
            self.cache = RinganCache(self.model.config.num_hidden_layers, 1)
        new = torch.tensor([self.token_ids[self.seen :]])
        set_seed(seed + len(self.turns))  # a reply depends on its position, not on earlier sampling
        out = self.model.generate(
            new,
            attention_mask=torch.ones_like(new),
            cache=self.cache,
            topic_ids=torch.tensor([self.topic_id]),
            context_ids=torch.tensor([self.context_id]),
            max_new_tokens=max_new_tokens,
            stop_strings=["\n"],  # an utterance is one line
            tokenizer=self.tok,
            streamer=streamer,
            **sampling,
        )
        generated = [t for t in out[0, new.shape[1] :].tolist() if t != self.tok.eos_token_id]
        text = self.tok.decode(generated)
        self.token_ids += generated  # the state continues from the reply exactly as generated
        self.pending = "\n\n"[len(text) - len(text.rstrip("\n")) :] if text.endswith("\n") else "\n\n"
        reply = clean_reply(text) or "..."
        self.turns.append(Turn(self.bot, reply))
        return reply

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        tensors = {"token_ids": torch.tensor(self.token_ids, dtype=torch.long)}
        if self.cache is not None:
            tensors.update({f"cache.{k}": v.contiguous() for k, v in self.cache.state_dict().items()})
        meta = {
            "topic": self.topic,
            "topic_id": self.topic_id,
            "context": self.context,
            "context_id": self.context_id,
            "user": self.user,
            "bot": self.bot,
            "pending": self.pending,
            "turns": [[t.speaker, t.text] for t in self.turns],
        }
        tmp = Path(str(path) + ".tmp")
        save_file(tensors, str(tmp), metadata={"ringan_chat": json.dumps(meta, ensure_ascii=False)})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, model, tok) -> ChatSession:
        from safetensors import safe_open

        from ringan import RinganCache

        try:
            with safe_open(str(path), "pt") as f:
                meta = json.loads(f.metadata()["ringan_chat"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # noqa: BLE001
            raise UserError(f"{path}: not a ringan chat session file ({err})") from None
        session = cls(
            model, tok, meta["topic"], meta["topic_id"], meta["context"], meta["context_id"], meta["user"], meta["bot"]
        )
        session.turns = [Turn(s, t) for s, t in meta["turns"]]
        session.token_ids = tensors["token_ids"].tolist()
        session.pending = meta["pending"]
        cache_tensors = {k[len("cache.") :]: v for k, v in tensors.items() if k.startswith("cache.")}
        if cache_tensors:
            session.cache = RinganCache.from_state_dict(cache_tensors, model.config.num_hidden_layers)
        return session


def chat_job(input_stream=None, **options) -> ChatSession:
    """See `ringan chat --help` (options and defaults: `cli.chat`)."""
    o = SimpleNamespace(**{**verb_defaults("chat"), **options})
    from transformers import TextStreamer

    set_threads(o.threads)
    model_dir = o.model
    model, tok = load_model(model_dir)
    if o.session and Path(o.session).exists():
        chat = ChatSession.load(o.session, model, tok)
        print(f"(resumed {o.session}: {len(chat.turns)} turns, {chat.seen} tokens in the state)")
    else:
        topic_id, topic_name = resolve_topic(model.config, o.topic)
        context_id, context_text = resolve_context(model_dir, model.config, topic_name, o.context)
        chat = ChatSession(model, tok, topic_name, topic_id, context_text, context_id, o.user, o.bot)
        print(f"==== Topik: {topic_name} ====\nKonteks: {context_text}\n(type /quit to stop)")
    sampling = sampling_kwargs(o.greedy, o.temperature, o.top_k, o.top_p, o.repetition_penalty)
    stream = input_stream or sys.stdin
    interactive = stream.isatty() if hasattr(stream, "isatty") else False
    while True:
        if interactive:
            print(f"{chat.user}: ", end="", flush=True)
        line = stream.readline()
        if not line or line.strip() in ("/quit", "/exit"):
            break
        if not line.strip():
            continue
        if not interactive:
            print(f"{chat.user}: {line.strip()}")
        print(f"{chat.bot}:", end="", flush=True)
        streamer = TextStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        chat.reply(line, o.max_new_tokens, sampling, o.seed, streamer)
        if o.session:
            chat.save(o.session)
    return chat


# ---------------------------------------------------------------------------------------------- push


def push_job(model_dir, repo_id, private=False, token=None, commit_message="Upload Ringan model") -> str:
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(model_dir)
    if not repo_id or "/" not in repo_id:
        raise UserError("--repo-id must look like 'user/name'")
    missing = [n for n in (*MODEL_FILES, "modeling_ringan.py", "README.md") if not (folder / n).is_file()]
    if missing:
        raise UserError(f"{folder}: cannot publish, missing {', '.join(missing)} (save it with `ringan train`)")
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    operations = [
        CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
        for p in files
        if not p.name.endswith(".tmp")
    ]
    api.create_commit(repo_id=repo_id, repo_type="model", operations=operations, commit_message=commit_message)
    print(f"pushed {folder} to {url}")
    return str(url)


# ----------------------------------------------------------------------------------------- conversion


def quantize_job(model_dir, output, bits, group_size) -> dict:
    from .conversion.quantize import quantize_folder

    if bits not in (4, 8):
        raise UserError("--bits must be 8 or 4")
    output = output or f"{str(model_dir).rstrip('/')}-int{bits}"
    report = quantize_folder(model_dir, output, bits, group_size)
    print(json.dumps(report, indent=1))
    return report


def export_job(fmt, model_dir, output, quantize) -> dict:
    from .conversion.onnx_export import export_onnx

    if fmt != "onnx":
        raise UserError(f"unknown export format {fmt!r}: only 'onnx'")
    output = output or f"{str(model_dir).rstrip('/')}-onnx"
    report = export_onnx(model_dir, output, quantize)
    print(json.dumps(report, indent=1))
    return report


def convert_job(source, checkpoint, output, tokenizer) -> dict:
    from .conversion.seed import convert_seed_checkpoint

    if source != "seed":
        raise UserError(f"unknown source {source!r}: only 'seed'")
    if not checkpoint or not Path(checkpoint).is_file():
        raise UserError(f"{checkpoint or '--checkpoint'}: no such checkpoint file")
    if not output:
        raise UserError("--output is required")
    return convert_seed_checkpoint(checkpoint, output, tokenizer)


# ---------------------------------------------------------------------------------------- quickstart

FRESH_PROCESS_CHECK = """
import importlib.abc, sys
class BlockRingan(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "ringan" or name.startswith("ringan."):
            raise ImportError("ringan is not importable here on purpose")
sys.meta_path.insert(0, BlockRingan())
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


def probe_step_seconds(vocab: int, batch_size: int, max_length: int, threads: int) -> float:
    """Time a few training steps of a default-size model, to size the run to a time budget."""
    import ringan

    model = ringan.RinganForCausalLM(ringan.RinganConfig(vocab_size=vocab)).train()
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


def quickstart_job(output="runs/quickstart", minutes=3.0, topic=None, seed=42) -> dict:
    from .data import load_default_corpus

    started = time.time()
    output = Path(output)
    threads = set_threads(0)
    entries = load_default_corpus()
    train_entries, val_entries = split_entries(entries, 0.1, seed)
    stats = corpus_statistics(entries)
    print(
        f"data: {stats['entries']} entries, {stats['turns']} turns, {stats['characters']:,} characters, "
        f"{stats['topics']} topics ({len(train_entries)} train / {len(val_entries)} held out)"
    )
    tok_dir = output / "tokenizer"
    train_tokenizer_job(None, str(tok_dir), 10000, [], 2, entries=train_entries)  # held-out entries stay unseen

    batch_size, max_length = 8, 512
    step = probe_step_seconds(len(load_tokenizer(tok_dir)), batch_size, max_length, threads)
    sequences = sum(max(1, math.ceil(len(render_entry(e)) / 4.4 / max_length)) for e in train_entries)
    steps = max(30, int(minutes * 60 / (step * 1.25)))
    print(
        f"budget: {minutes:.1f} min at {step:.2f} s/step -> {steps} steps (~{steps * batch_size / sequences:.0f} epochs)"
    )
    metrics = train_job(
        output=str(output),
        tokenizer=str(tok_dir),
        max_length=max_length,
        batch_size=batch_size,
        max_steps=steps,
        eval_steps=max(steps // 4, 1),
        save_steps=max(steps // 4, 1),
        logging_steps=max(steps // 20, 1),
        learning_rate=3e-3,
        seed=seed,
        threads=threads,
    )
    model_dir = output / "model"
    print("\n== held-out evaluation ==")
    held_out = output / "held_out.txt"
    from .data import write_dialogues

    write_dialogues(held_out, val_entries)
    evaluation = eval_job(str(model_dir), [str(held_out)])

    print("\n== a generated dialogue ==")
    trained = train_entries[0] if topic is None else next((e for e in train_entries if e.topic == topic), None)
    if trained is None:
        raise UserError(f"unknown topic {topic!r} for the quickstart")
    speakers = trained.speakers[:2]
    generate_job(
        model=str(model_dir),
        topic=trained.topic,
        context=trained.context,
        turn=[f"{trained.turns[0].speaker}: {trained.turns[0].text}"],
        speakers=speakers,
        num_turns=3,
        max_new_tokens=80,
        seed=seed,
        stream=False,
    )
    print("== self-contained checkpoint ==")
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_CHECK, str(model_dir.resolve())],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=str(output),
    )
    if result.returncode != 0:
        raise UserError(f"the saved model did not load in a fresh process:\n{result.stderr[-2000:]}")
    print(result.stdout.strip())
    print(f"\ndone in {time.time() - started:.0f} s: model in {model_dir}")
    return {"train": metrics, "eval": evaluation}
