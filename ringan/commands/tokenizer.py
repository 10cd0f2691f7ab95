"""`ringan tokenizer`: train the byte-level BPE tokenizer on dialogue files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..data import Entry, corpus_statistics, read_dialogues
from ..defaults import VOCAB_BOUNDS
from ..errors import UserError
from ..files import check_output, save_atomically
from ..options import Options, option
from .common import data_option, data_paths, read_text_lines


@dataclass(frozen=True, kw_only=True)
class TokenizerOptions(Options):
    """Train the byte-level BPE tokenizer on dialogue files (and optional plain text)."""

    data: list[str] | None = data_option()
    output: str = option("runs/tokenizer", "folder to save the tokenizer to (loads with AutoTokenizer.from_pretrained)")
    vocab_size: int = option(10000, "at most this many tokens (a small corpus yields fewer)", **VOCAB_BOUNDS)
    text: list[str] | None = option(None, "extra plain-text files, one paragraph per line")
    min_frequency: int = option(2, "a merge needs a pair seen at least this often", minimum=1, maximum=2**31)
    overwrite: bool = option(False, "replace what OUTPUT holds (never a model: choose another folder for that)")


def train_tokenizer(options: TokenizerOptions | None = None, /, *, entries: Sequence[Entry] | None = None, **overrides):
    """Train and save the tokenizer (on `entries` instead of `options.data` when given); returns it."""
    from ..tokenization import characters_per_token
    from ..tokenization import train_tokenizer as train_bpe

    o = TokenizerOptions.build(options, overrides)
    inputs = [*(o.data or []), *(o.text or [])]
    output = check_output(o.output, inputs, o.overwrite)
    if output.is_dir() and ((output / "model.safetensors").is_file() or (output / "config.json").is_file()):
        raise UserError(f"--output {output}: holds a model; a tokenizer saved there would replace its tokenizer")
    entries = list(entries) if entries is not None else read_dialogues(data_paths(o.data))
    tok = train_bpe(
        entries, vocab_size=o.vocab_size, extra_texts=read_text_lines(o.text or []), min_frequency=o.min_frequency
    )
    save_atomically(lambda folder: tok.save_pretrained(str(folder)), output, "the tokenizer")
    stats = corpus_statistics(entries)
    print(
        f"tokenizer: {len(tok)} tokens, {characters_per_token(tok, entries):.2f} characters/token on "
        f"{stats['entries']} entries ({stats['turns']} turns, {stats['characters']:,} characters); saved to {o.output}"
    )
    return tok
