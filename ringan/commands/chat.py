"""`ringan chat`: an interactive conversation held in the model's recurrent state, resumable from a file."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from ..data import Turn, render_dialogue
from ..errors import UserError
from ..options import option
from .common import DEFAULT_MODEL, load_model, resolve_context, resolve_topic, set_threads
from .generate import SamplingOptions, clean_reply

BLANK_LINE = "\n\n"


@dataclass(frozen=True, kw_only=True)
class ChatOptions(SamplingOptions):
    """Chat: you play one speaker, the model the other. Each reply costs only its new tokens (the
    conversation lives in the fixed-size recurrent state). Type /quit to stop."""

    model: str = option(DEFAULT_MODEL, "a saved model folder")
    topic: str | None = option(None, "the Topik, by name or id", default_text="the first known topic")
    context: str | None = option(None, "the Konteks paragraph", default_text="the topic's")
    user: str = option("Kamu", "your speaker name")
    bot: str = option("Ringan", "the model's speaker name")
    session: str | None = option(None, "a session file (safetensors): resumed if it exists, saved after every reply")


class ChatSession:
    """A conversation held in the recurrent cache: each reply feeds only the tokens the state has not seen.

    Text is tokenized in pieces that never end in whitespace (a trailing blank line is kept back and sent
    with the next piece): BPE turns a final "\\n\\n" into one token that training only shows before `</s>`,
    while inside text it is two "\\n" tokens. `save()` writes the transcript and the fixed-size state to one
    safetensors file; `load()` resumes it without re-reading the history.
    """

    def __init__(self, model, tok, topic: str, topic_id: int, context: str, context_id: int, user: str, bot: str):
        self.model, self.tok = model, tok
        self.topic, self.topic_id, self.context, self.context_id = topic, topic_id, context, context_id
        self.user, self.bot = user, bot
        self.turns: list[Turn] = []
        header = render_dialogue(topic, context).removesuffix(BLANK_LINE)
        self.token_ids: list[int] = tok(header)["input_ids"]
        self.pending = BLANK_LINE  # whitespace that belongs before the next piece of text
        self.cache = None

    @property
    def seen(self) -> int:
        return int(self.cache.seen_tokens[0]) if self.cache is not None else 0

    def reply(self, message: str, max_new_tokens: int, sampling: dict, seed: int, streamer=None) -> str:
        from transformers import set_seed

        from ringan import RinganCache

        self.turns.append(Turn(self.user, " ".join(message.split())))
        piece = self.pending + render_dialogue(None, None, self.turns[-1:], self.bot)
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
        self.pending = BLANK_LINE[len(text) - len(text.rstrip("\n")) :] if text.endswith("\n") else BLANK_LINE
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


def chat(options: ChatOptions | None = None, /, *, input_stream: TextIO | None = None, **overrides) -> ChatSession:
    """Read messages from `input_stream` (default: standard input) until end of input or /quit; returns the
    session."""
    from transformers import TextStreamer

    o = ChatOptions.build(options, overrides)
    set_threads(o.threads)
    model, tok = load_model(o.model)
    if o.session and Path(o.session).exists():
        session = ChatSession.load(o.session, model, tok)
        print(f"(resumed {o.session}: {len(session.turns)} turns, {session.seen} tokens in the state)")
    else:
        topic_id, topic_name = resolve_topic(model.config, o.topic)
        context_id, context_text = resolve_context(o.model, model.config, topic_name, o.context)
        session = ChatSession(model, tok, topic_name, topic_id, context_text, context_id, o.user, o.bot)
        print(f"==== Topik: {topic_name} ====\nKonteks: {context_text}\n(type /quit to stop)")
    sampling = o.generate_kwargs()
    stream = input_stream or sys.stdin
    interactive = stream.isatty() if hasattr(stream, "isatty") else False
    while True:
        if interactive:
            print(f"{session.user}: ", end="", flush=True)
        line = stream.readline()
        if not line or line.strip() in ("/quit", "/exit"):
            break
        if not line.strip():
            continue
        if not interactive:
            print(f"{session.user}: {line.strip()}")
        print(f"{session.bot}:", end="", flush=True)
        streamer = TextStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        session.reply(line, o.max_new_tokens, sampling, o.seed, streamer)
        if o.session:
            session.save(o.session)
    return session
