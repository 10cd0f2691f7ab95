"""A chat request as the model reads it: the dialogue format cut into fixed token pieces, and the keys of its
saved states.

The conversation is tokenized piece by piece, the same way for every request: the header (`==== Topik ====`
and `Konteks:`, without its trailing blank line), then per turn `"\\n\\nName:"` and `" text"`, then the
generation prompt `"\\n\\nSpeaker:"` (as `ChatSession` does: BPE would read a final blank line as one token that
training only shows before `</s>`). A reply is generated right after `"Speaker:"`, so when its tokens are the
tokens of `" text"` the state after the reply is exactly the state of the next request's prefix.

Keys are a hash chain over the pieces: `key_0 = H(model, conditioning)`, `key_i = H(key_{i-1}, piece_i)`. Two
requests share a key only when they share the model, the Topik/Konteks conditioning and every token id up to
that piece, so a saved state is never continued by a conversation it did not read.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ..data import Turn, render_dialogue
from ..decoding import conditioning_inputs
from ..labels import LabelVocab
from ..tokenization import encode_text

TURN_GAP = "\n\n"
MAX_REMEMBERED_PIECES = 100_000  # tokenized turn pieces kept (a few tens of MB at most)


def model_fingerprint(folder: str | Path) -> str:
    """A digest of a model folder's weights and config: saved states of another model never match."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        with (Path(folder) / name).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:32]


def _chain(key: bytes, piece: list[int]) -> bytes:
    return hashlib.sha256(key + len(piece).to_bytes(8, "little") + array("q", piece).tobytes()).digest()


@dataclass
class Prompt:
    """Token ids to reply to, with the conditioning inputs (batch 1) and, for a chat, the key after each piece."""

    ids: list[int]
    conditioning: dict
    chat: bool
    boundaries: list[tuple[int, bytes]] = field(default_factory=list)  # (tokens so far, chain key)

    def lookup_keys(self, limit: int = 8) -> list[tuple[int, str]]:
        """`(length, key)` of the saved states that could continue this prompt, longest first. The full prompt is
        left out: a state holds no logits, so at least one token must be read to reply."""
        usable = [(n, k.hex()) for n, k in self.boundaries if 0 < n < len(self.ids)]
        return usable[::-1][:limit]

    @property
    def prompt_key(self) -> str:
        """The key of the whole prompt (the state right after prefill)."""
        return self.boundaries[-1][1].hex()

    def reply_key(self, reply_piece: list[int]) -> str:
        """The key of the prompt followed by a reply's `" text"` piece."""
        return _chain(self.boundaries[-1][1], reply_piece).hex()


class PromptBuilder:
    """Token pieces and conditioning for one served model."""

    def __init__(self, model, tok, fingerprint: str):
        self.model, self.tok, self.fingerprint = model, tok, fingerprint
        self.topics = LabelVocab(model.config.topic_names or [])
        self.contexts = LabelVocab(model.config.context_names or [])
        self._pieces: OrderedDict[str, list[int]] = OrderedDict()

    def encode(self, text: str) -> list[int]:
        return encode_text(self.tok, text, add_special_tokens=False)["input_ids"]

    def _encode_pieces(self, texts: list[str]) -> list[list[int]]:
        """The tokens of each piece. A client re-sends the whole history every turn, so pieces are remembered
        (tokenizing a 200-turn history took ~45 ms of the event loop per request; a piece's tokens never depend on
        its neighbours); the new ones are encoded in one batched call."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._pieces))
        if missing:
            for text, ids in zip(missing, encode_text(self.tok, missing, add_special_tokens=False)["input_ids"]):
                self._pieces[text] = ids
        out = []
        for text in texts:
            self._pieces.move_to_end(text)
            out.append(self._pieces[text])
        while len(self._pieces) > MAX_REMEMBERED_PIECES:
            self._pieces.popitem(last=False)
        return out

    def conditioning(self, topic: str | None, context: str | None) -> dict:
        return conditioning_inputs(
            self.model, self.tok, topic, self.topics.id(topic), context, self.contexts.id(context)
        )

    def _root(self, conditioning: dict) -> bytes:
        # the conditioning inputs are part of the key: the same tokens under another Topik read differently
        parts = [self.fingerprint.encode()]
        for name in sorted(conditioning):
            parts += [name.encode(), array("q", conditioning[name].flatten().tolist()).tobytes()]
        return hashlib.sha256(b"\0".join(parts)).digest()

    def chat(self, topic: str, context: str, turns: list[Turn], speaker: str) -> Prompt:
        conditioning = self.conditioning(topic, context)
        header = render_dialogue(topic, context).removesuffix(TURN_GAP)
        texts = [text for turn in turns for text in (f"{TURN_GAP}{turn.speaker}:", f" {turn.text}")]
        texts.append(f"{TURN_GAP}{speaker}:")
        pieces = [encode_text(self.tok, header)["input_ids"], *self._encode_pieces(texts)]
        ids: list[int] = []
        key = self._root(conditioning)
        boundaries = []
        for piece in pieces:
            ids += piece
            key = _chain(key, piece)
            boundaries.append((len(ids), key))
        return Prompt(ids, conditioning, chat=True, boundaries=boundaries)

    def completion(self, text: str, topic: str | None, context: str | None) -> Prompt:
        conditioning = self.conditioning(topic, context) if (topic or context) else {}
        return Prompt(encode_text(self.tok, text)["input_ids"], conditioning, chat=False)

    def reply_piece(self, content: str) -> list[int]:
        """The tokens the next request will hold for this reply (its `" text"` piece)."""
        return self.encode(f" {content}")
