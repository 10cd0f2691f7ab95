"""`ringan chat`: an interactive conversation held in the model's recurrent state, resumable from a file."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..data import Turn, clean_reply, render_dialogue
from ..errors import OptionError, UserError
from ..files import readable_folder, writing
from ..loading import load_model
from ..options import option
from .common import model_folder, model_option, resolve_context, resolve_topic, set_threads
from .sampling import Replier, SamplingOptions

BLANK_LINE = "\n\n"


@dataclass(frozen=True, kw_only=True)
class ChatOptions(SamplingOptions):
    """Chat: you play one speaker, the model the other. Each reply costs only its new tokens (the
    conversation lives in the fixed-size recurrent state). Type /quit to stop."""

    model: str | None = model_option()
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

    def __init__(
        self, model, tok, topic: str, topic_id: int, context: str, context_id: int, user: str, bot: str, replier=None
    ):
        self.model, self.tok, self.replier = model, tok, replier
        self.topic, self.topic_id, self.context, self.context_id = topic, topic_id, context, context_id
        from ..tokenization import encode_text

        self.user, self.bot = user, bot
        self.turns: list[Turn] = []
        header = render_dialogue(topic, context).removesuffix(BLANK_LINE)
        self.token_ids: list[int] = encode_text(tok, header)["input_ids"]
        self.pending = BLANK_LINE  # whitespace that belongs before the next piece of text
        self.cache = None

    @property
    def seen(self) -> int:
        """How many tokens of the conversation the state has read."""
        if self.cache is None:
            return 0
        if isinstance(self.cache, dict):  # an ONNX Runtime state
            return int(self.cache["position"][0])
        return int(self.cache.seen_tokens[0])

    def reply(self, message: str, seed: int, stream: bool = True) -> str:
        from ..decoding import conditioning_inputs

        """The bot's reply to `message`: only the tokens the state has not read go through the model."""
        from ..tokenization import encode_text

        self.turns.append(Turn(self.user, " ".join(message.split())))
        piece = self.pending + render_dialogue(None, None, self.turns[-1:], self.bot)
        self.token_ids += encode_text(self.tok, piece, add_special_tokens=False)["input_ids"]
        conditioning = {}
        if self.cache is None:  # the conversation's topic/context vector goes into the state with its first tokens
            conditioning = conditioning_inputs(
                self.model, self.tok, self.topic, self.topic_id, self.context, self.context_id
            )
        # a reply depends on its position in the conversation, not on earlier sampling
        _, tokens = self.replier.reply(
            self.token_ids[self.seen :], conditioning, seed + len(self.turns), stream, state=self.cache
        )
        self.cache = self.replier.decoder.state
        generated = [t for t in tokens if t != self.tok.eos_token_id]
        text = self.tok.decode(generated)
        self.token_ids += generated  # the state continues from the reply exactly as generated
        self.pending = BLANK_LINE[len(text) - len(text.rstrip("\n")) :] if text.endswith("\n") else BLANK_LINE
        reply = clean_reply(text) or "..."
        self.turns.append(Turn(self.bot, reply))
        return reply

    def save(self, path: str | Path) -> None:
        import torch
        from safetensors.torch import save_file

        if isinstance(self.cache, dict):
            raise UserError("a chat session file holds the torch runtime's state: use --runtime torch with --session")
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
        try:
            with writing(path, "the chat session"):
                save_file(tensors, str(tmp), metadata={"ringan_chat": json.dumps(meta, ensure_ascii=False)})
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, model, tok, replier=None) -> ChatSession:
        """Resume a saved session; a file that is not one, or one made with another model, is a `UserError`."""
        from ringan import RinganCache

        meta, tensors = _read_session(path)
        try:
            session = cls(
                model,
                tok,
                meta["topic"],
                int(meta["topic_id"]),
                meta["context"],
                int(meta["context_id"]),
                meta["user"],
                meta["bot"],
                replier,
            )
            session.turns = [Turn(s, t) for s, t in meta["turns"]]
            session.pending = str(meta["pending"])
            session.token_ids = tensors["token_ids"].tolist()
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{path}: not a ringan chat session file (bad or missing field: {_short(err)})") from None
        ids = session.token_ids
        if tensors["token_ids"].dim() != 1 or tensors["token_ids"].is_floating_point():
            found = f"{tensors['token_ids'].dtype} of shape {tuple(tensors['token_ids'].shape)}"
            raise UserError(f"{path}: field token_ids: expected a list of integer token ids, got {found}")
        if any(not 0 <= i < model.config.vocab_size for i in ids):
            raise UserError(
                f"{path}: its token ids do not fit this model's vocabulary: it was saved with another model"
            )
        if session.pending not in (BLANK_LINE, "\n", ""):  # what a reply can leave of the blank line
            raise UserError(
                f"{path}: field pending: expected '\\n\\n', '\\n' or '', got {_short(repr(session.pending))}"
            )
        cache_tensors = {k[len("cache.") :]: v for k, v in tensors.items() if k.startswith("cache.")}
        if cache_tensors:
            try:
                session.cache = RinganCache.from_state_dict(cache_tensors, model.config.num_hidden_layers)
                _check_cache(session.cache, model, len(ids))
            except (KeyError, ValueError, RuntimeError, IndexError) as err:
                raise UserError(
                    f"{path}: its saved state does not fit this model (saved with another model?) or its "
                    f"transcript: field cache.{_short(err)}"
                ) from None
        return session


def _short(err: object) -> str:
    text = " ".join(str(err).split())
    return text[:200]


def _read_session(path: str | Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    if Path(path).is_dir():
        raise UserError(f"{path}: is a folder, not a chat session file")
    try:
        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get("ringan_chat")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001  (safetensors raises its own error type for every kind of damage)
        raise UserError(f"{path}: not a ringan chat session file ({_short(err)})") from None
    if raw is None or "token_ids" not in tensors:
        raise UserError(f"{path}: not a ringan chat session file (no ringan_chat metadata or token_ids)")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise UserError(f"{path}: not a ringan chat session file (its metadata is not valid JSON)") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: not a ringan chat session file (its metadata is not a JSON object)")
    return meta, tensors


def _check_cache(cache, model, n_tokens: int) -> None:
    """The saved state has this model's shape and has not seen more tokens than the transcript holds."""
    import torch

    config = model.config
    probe = torch.zeros(1, 1, dtype=torch.long)
    with torch.no_grad():
        fresh = model(probe, use_cache=True).cache.state_dict()
    saved = cache.state_dict()
    # the condition vector is there once a conversation began; the probe had none
    dtype = next(v.dtype for v in fresh.values() if v.is_floating_point())
    fresh.setdefault("condition", torch.zeros(1, 1, config.hidden_size, dtype=dtype))
    for key, value in saved.items():
        want = fresh.get(key)
        if want is None or tuple(value.shape) != tuple(want.shape) or value.dtype != want.dtype:
            found, expected = (
                f"{tuple(value.shape)} {value.dtype}",
                "nothing" if want is None else f"{tuple(want.shape)} {want.dtype}",
            )
            raise ValueError(f"{key}: {found}, expected {expected} for {config.num_hidden_layers} layers")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{key}: holds NaN or infinite values")
    missing = [key for key in fresh if key not in saved and key != "condition"]
    if missing:
        raise ValueError(f"{missing[0]}: missing")
    # the state has read the whole transcript but the last token generated (the next reply feeds it)
    seen = int(cache.seen_tokens[0])
    if not n_tokens - 1 <= seen <= n_tokens:
        raise ValueError(
            f"seen_tokens: {seen}, expected {n_tokens - 1} or {n_tokens} (the transcript holds {n_tokens})"
        )


def chat(options: ChatOptions | None = None, /, *, input_stream: TextIO | None = None, **overrides) -> ChatSession:
    """Read messages from `input_stream` (default: standard input) until end of input or /quit; returns the
    session."""

    o = ChatOptions.build(options, overrides)
    if o.session and o.runtime == "onnx":
        raise OptionError("--runtime", "torch or auto with --session (a session file holds the torch state)", "onnx")
    set_threads(o.threads)
    model_dir = readable_folder(model_folder(o.model))  # a model caught mid-save is read from its complete copy
    model, tok = load_model(model_dir)
    if o.session and Path(o.session).exists():
        session = ChatSession.load(o.session, model, tok)
        resumed = f"(resumed {o.session}: {len(session.turns)} turns, {session.seen} tokens in the state)"
    else:
        topic_id, topic_name = resolve_topic(model.config, o.topic)
        context_id, context_text = resolve_context(model_dir, model.config, topic_name, o.context)
        session = ChatSession(model, tok, topic_name, topic_id, context_text, context_id, o.user, o.bot)
        resumed = None
    # the runtime is chosen (and named) once the inputs are known to be good
    session.replier = Replier(model, tok, model_dir if not o.session else None, o)
    print(resumed or f"==== Topik: {session.topic} ====\nKonteks: {session.context}\n(type /quit to stop)")
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
        session.reply(line, o.seed)
        if o.session:
            session.save(o.session)
    return session
