"""Ringan's tokenizer: byte-level BPE, its special tokens, and a chat template in the training layout.

Trained here and wrapped so `AutoTokenizer.from_pretrained` loads it with no custom code; its chat template
renders a conversation exactly as `data.render_dialogue` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from .data import Entry, render_entry

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0, 1, 2, 3: stable across every trained tokenizer
DEFAULT_ASSISTANT = "Asisten"
DEFAULT_USER = "Pengguna"

# `data.render_dialogue`'s layout, for plain transformers users: a topic header, the Konteks (system message),
# then "Name: text" turns each followed by a blank line. The generation prompt ends in "<Speaker>:".
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if topic is defined and topic %}==== Topik: {{ topic }} ====\n\n{% endif %}"
    "{% set ns = namespace(assistant=assistant_name if assistant_name is defined and assistant_name else '') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}Konteks: {{ message['content'] | trim }}\n\n"
    "{% else %}"
    "{% if message['role'] == 'assistant' %}"
    "{% set name = message['name'] if message.get('name') else (ns.assistant or '" + DEFAULT_ASSISTANT + "') %}"
    "{% if not (assistant_name is defined and assistant_name) %}{% set ns.assistant = name %}{% endif %}"
    "{% else %}"
    "{% set name = message['name'] if message.get('name') else (user_name if user_name is defined and user_name else '"
    + DEFAULT_USER
    + "') %}"
    "{% endif %}"
    "{{ name }}: {{ message['content'] | trim }}\n\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ ns.assistant or '" + DEFAULT_ASSISTANT + "' }}:{% endif %}"
)


def _texts(entries: Iterable[Entry], extra_texts: Iterable[str]) -> Iterator[str]:
    for entry in entries:
        yield render_entry(entry)
    yield from extra_texts


def train_tokenizer(
    entries: Sequence[Entry],
    vocab_size: int = 10000,
    extra_texts: Iterable[str] = (),
    min_frequency: int = 2,
    model_max_length: int = 131072,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on dialogue entries (plus optional plain text).

    The vocabulary holds at most `vocab_size` tokens; a small corpus yields fewer (merges stop when no
    pair occurs `min_frequency` times), so size the model from `len(tokenizer)`, not from this argument.
    """
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_texts(entries, extra_texts), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return wrap_tokenizer(tokenizer, model_max_length)


def wrap_tokenizer(tokenizer: Tokenizer, model_max_length: int = 131072) -> PreTrainedTokenizerFast:
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",  # decoder-only generation pads on the left
        clean_up_tokenization_spaces=False,  # keep decode(encode(x)) == x
        model_max_length=model_max_length,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def end_of_turn_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """The token ids that end a reply: `</s>` and every token made only of whitespace with a newline in it (`Ċ`,
    `ĊĊ`, ... in the byte-level vocabulary). A turn in the training layout ends in a blank line and an utterance is
    one line, so a reply is over at its first newline; as `generation_config.eos_token_id` this makes a plain
    `model.generate()` or `pipeline()` stop there, with no `stop_strings` and no tokenizer."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    newline_tokens = [i for i, text in enumerate(texts) if "\n" in text and not text.strip()]
    return [tokenizer.eos_token_id, *(i for i in newline_tokens if i != tokenizer.eos_token_id)]


def encode_text(tokenizer: PreTrainedTokenizerFast, text: str | list[str], **kwargs):
    """`tokenizer(text, **kwargs)` with the user's text read as text only: `</s>`, `<s>` or `<pad>` written in a
    turn, a Topik or a chat message become the characters they are, never the control ids (a `</s>` in a message
    would end the reply before it starts). Every encoding of user text in ringan goes through here; the ids the
    layout needs (`<s>` from the post-processor, `</s>`, padding) are added as ids. The chat template's own path
    is `apply_chat_template(..., sanitize_control_tokens=True)`."""
    return tokenizer(text, split_special_tokens=True, **kwargs)


def encode_entry(tokenizer: PreTrainedTokenizerFast, entry: Entry) -> list[int]:
    """Token ids of one training sequence: `<s>` + the entry's text + `</s>`."""
    return encode_text(tokenizer, render_entry(entry))["input_ids"] + [tokenizer.eos_token_id]


def chat_messages(entry: Entry, assistant: str | None = None) -> list[dict]:
    """An entry as chat messages: Konteks as the system message; `assistant` speaks the assistant turns."""
    assistant = assistant or entry.turns[-1].speaker
    messages = [{"role": "system", "content": entry.context}]
    messages += [
        {"role": "assistant" if t.speaker == assistant else "user", "name": t.speaker, "content": t.text}
        for t in entry.turns
    ]
    return messages


def characters_per_token(tokenizer: PreTrainedTokenizerFast, entries: Sequence[Entry]) -> float:
    """Compression of the tokenizer on these entries (higher is better)."""
    texts = [render_entry(e) for e in entries]
    tokens = sum(len(ids) for ids in encode_text(tokenizer, texts, add_special_tokens=False)["input_ids"])
    return sum(len(t) for t in texts) / max(tokens, 1)


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: str | Path) -> None:
    tokenizer.save_pretrained(str(folder))
