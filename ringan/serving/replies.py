"""A reply's text as it streams: decoded from its tokens, cut at stop sequences, sent only once it is final.

Text is re-decoded from all the tokens at every step (byte-level BPE can split a character across tokens), and
what could still change is held back: a trailing half character, the start of a stop sequence, and for a chat
reply trailing white space (the reply is its first line, stripped). The deltas sent add up to the final text.
"""

from __future__ import annotations

from collections.abc import Collection


class ReplyText:
    def __init__(self, tok, chat: bool, stop: list[str], skip_ids: Collection[int]):
        self.tok, self.chat, self.stop, self.skip_ids = tok, chat, stop, frozenset(skip_ids)
        self.tokens: list[int] = []
        self.sent = 0
        self.stopped = False  # a stop sequence was found
        self._text = ""

    def _decode(self) -> str:
        text = self.tok.decode([t for t in self.tokens if t not in self.skip_ids], skip_special_tokens=True)
        return text.split("\n")[0].lstrip() if self.chat else text

    @property
    def content(self) -> str:
        """The text sent so far (all of it once `finish()` or a stop sequence ended the reply)."""
        return self._text[: self.sent]

    def add(self, token: int) -> str:
        """Take a new token; returns the text that became final."""
        self.tokens.append(token)
        text = self._text = self._decode()
        cuts = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if cuts:
            self.stopped = True
            final = text[: min(cuts)]
            if self.chat:
                final = final.rstrip()
            self._text = final
            return self._advance(len(final))
        safe = len(text)
        for s in self.stop:  # the start of a stop sequence may be completed by the next token
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    safe = min(safe, len(text) - k)
                    break
        if self.chat:
            safe = min(safe, len(text.rstrip()))
        if text[:safe].endswith("\ufffd"):  # half of a character
            safe -= 1
        return self._advance(safe)

    def finish(self) -> str:
        """The rest of the text, at the end of the reply."""
        text = self._decode()
        self._text = text.rstrip() if self.chat else text
        return self._advance(len(self._text))

    def _advance(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        delta = self._text[self.sent : upto]
        self.sent = upto
        return delta
