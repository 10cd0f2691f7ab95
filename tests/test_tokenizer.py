"""Tests of Ringan's tokenizer: special tokens, lossless round trips, saving/loading and the chat template."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ringan.data import Entry, Turn, load_default_corpus, render_dialogue, render_entry
from ringan.tokenization import (
    BOS,
    DEFAULT_ASSISTANT,
    DEFAULT_USER,
    SPECIAL_TOKENS,
    characters_per_token,
    chat_messages,
    encode_entry,
    save_tokenizer,
    train_tokenizer,
)

VOCAB_SIZE = 2000

TRICKY = [
    "",
    "a",
    "Apa kabar, Bu Ñoman? Café-nya ramé sekali, ya — bahkan pukul 21:00.",
    "Sate ayam 🍢, es teh 🧋, dan bendera 🇮🇩; keluarga 👨‍👩‍👧‍👦 pun datang!",
    "dua  spasi,   tiga spasi,    empat.",
    "\ttab di awal\tdan\tdi tengah\t",
    "baris pertama\nbaris kedua\n\n\nsetelah tiga baris baru\n",
    " spasi di awal dan di akhir ",
    "e\u0301 (e + combining acute) vs é; ﬁ ligature; ｆｕｌｌｗｉｄｔｈ; zero\u200bwidth; nbsp\u00a0here",
    "Windows\r\nline\rendings",
    "Ṣẹ́ àti ọ̀rọ̀ — ümlaut, ß, Ω, 中文, عربى",
    "Konteks: ini bukan header ==== Topik: juga bukan ====",
]


@pytest.fixture(scope="module")
def corpus() -> list[Entry]:
    return load_default_corpus()


@pytest.fixture(scope="module")
def tokenizer(corpus) -> PreTrainedTokenizerFast:
    return train_tokenizer(corpus, vocab_size=VOCAB_SIZE)


@pytest.fixture(scope="module")
def saved(tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(tokenizer, folder)
    return folder


@pytest.fixture(scope="module")
def reloaded(saved) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(str(saved))


def roundtrip(tok, text: str) -> str:
    return tok.decode(tok(text)["input_ids"], skip_special_tokens=True)


# ------------------------------------------------------------------------------------------ special tokens


def test_special_token_ids(tokenizer, saved):
    # spelt out here, not read from the module: a renamed or reordered special token must fail this test
    assert tokenizer.convert_tokens_to_ids(["<pad>", "<s>", "</s>", "<unk>"]) == [0, 1, 2, 3]
    added = json.loads((saved / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    assert [(t["id"], t["content"], t["special"]) for t in added] == [
        (0, "<pad>", True),
        (1, "<s>", True),
        (2, "</s>", True),
        (3, "<unk>", True),
    ]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (
        0,
        1,
        2,
        3,
    )
    assert tokenizer.padding_side == "left"


def test_bos_is_prepended_and_encode_entry_appends_eos(tokenizer, corpus):
    ids = tokenizer("halo")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.bos_token_id not in ids[1:]
    assert tokenizer("halo", add_special_tokens=False)["input_ids"] == ids[1:]
    entry = corpus[0]
    seq = encode_entry(tokenizer, entry)
    assert seq[0] == tokenizer.bos_token_id and seq[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(seq[1:-1]) == render_entry(entry)
    assert tokenizer.decode(seq, skip_special_tokens=True) == render_entry(entry)


def test_special_tokens_survive_save_and_load_in_a_fresh_process(tokenizer, saved):
    sample = "==== Topik: Uji ====\n\nKonteks: Café ramé.\n\nSari: Halo 👋\n\n"
    script = textwrap.dedent(
        """
        import json, sys
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(sys.argv[1])
        sample = sys.argv[2]
        print(json.dumps({
            "class": type(tok).__name__,
            "special": tok.convert_tokens_to_ids(["<pad>", "<s>", "</s>", "<unk>"]),
            "attrs": [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id],
            "len": len(tok),
            "ids": tok(sample)["input_ids"],
            "decoded": tok.decode(tok(sample)["input_ids"], skip_special_tokens=True),
            "chat": tok.apply_chat_template(
                [{"role": "system", "content": "K."}, {"role": "user", "content": "a"}],
                topic="T", tokenize=False, add_generation_prompt=True,
            ),
            "modules": sorted(m for m in sys.modules if m.split(".")[0] == "ringan"),
        }))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(saved), sample], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["special"] == [0, 1, 2, 3]
    assert got["attrs"] == [0, 1, 2, 3]
    assert got["modules"] == []  # loaded with no custom code
    assert got["class"] == type(tokenizer).__name__
    assert got["len"] == len(tokenizer)
    assert got["ids"] == tokenizer(sample)["input_ids"]
    assert got["decoded"] == sample
    assert got["chat"] == "<s>==== Topik: T ====\n\nKonteks: K.\n\nPengguna: a\n\nAsisten:"


# ----------------------------------------------------------------------------------------- loading


def test_auto_tokenizer_loads_without_custom_code(tokenizer, reloaded, saved):
    assert isinstance(reloaded, PreTrainedTokenizerFast)
    assert len(reloaded) == len(tokenizer)
    assert reloaded.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2, 3]
    assert reloaded.chat_template == tokenizer.chat_template
    assert reloaded.padding_side == "left"
    assert reloaded.model_max_length == tokenizer.model_max_length
    config = json.loads((saved / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert "auto_map" not in config


def test_reloaded_tokenizer_matches_and_round_trips_corpus(tokenizer, reloaded, corpus):
    texts = [render_entry(e) for e in corpus]
    ids = tokenizer(texts)["input_ids"]
    assert reloaded(texts)["input_ids"] == ids
    for text, seq in zip(texts, ids):
        assert reloaded.decode(seq, skip_special_tokens=True) == text


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_strings_round_trip(tokenizer, reloaded, text):
    assert roundtrip(tokenizer, text) == text
    assert roundtrip(reloaded, text) == text
    assert tokenizer.unk_token_id not in tokenizer(text)["input_ids"]  # byte-level: nothing is unknown


@settings(max_examples=100, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_arbitrary_text_round_trips(tokenizer, text):
    # Literal special-token strings ("<s>", "<unk>", ...) inside text are read as the special tokens
    # themselves (the usual Hugging Face behaviour), so they are the one thing that does not round-trip.
    assume(not any(token in text for token in SPECIAL_TOKENS))
    assert roundtrip(tokenizer, text) == text


def test_batch_decode_round_trips(tokenizer):
    batch = tokenizer(TRICKY)["input_ids"]
    assert tokenizer.batch_decode(batch, skip_special_tokens=True) == TRICKY


# ---------------------------------------------------------------------------------- corpus and size


def test_every_corpus_entry_round_trips_exactly(tokenizer, corpus):
    for entry in corpus:
        text = render_entry(entry)
        assert roundtrip(tokenizer, text) == text, entry.topic


def test_compression_on_the_shipped_corpus(tokenizer, corpus, record_property):
    cpt = characters_per_token(tokenizer, corpus)
    print(f"\n[ringan tokenizer] characters per token on the shipped corpus (vocab_size={VOCAB_SIZE}): {cpt:.3f}")
    record_property("characters_per_token", round(cpt, 4))
    texts = [render_entry(e) for e in corpus]
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert cpt == pytest.approx(sum(map(len, texts)) / tokens)
    assert cpt > 2.5


def test_vocab_size_is_respected(tokenizer, corpus):
    assert len(tokenizer) <= VOCAB_SIZE
    assert max(tokenizer.get_vocab().values()) < VOCAB_SIZE
    small = train_tokenizer(corpus[:5], vocab_size=300)
    assert 260 <= len(small) <= 300  # 256 byte symbols + 4 special tokens always fit
    assert small.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2, 3]
    text = render_entry(corpus[-1])
    assert roundtrip(small, text) == text


def test_extra_texts_feed_the_tokenizer(corpus):
    word = "Xylofonwqz"
    plain = train_tokenizer(corpus[:3], vocab_size=600)
    extra = train_tokenizer(corpus[:3], vocab_size=600, extra_texts=[f"{word} "] * 50)
    assert len(extra(word, add_special_tokens=False)["input_ids"]) < len(
        plain(word, add_special_tokens=False)["input_ids"]
    )


# ------------------------------------------------------------------------------------------ chat template


def test_chat_messages(corpus):
    entry = corpus[0]
    messages = chat_messages(entry)
    assert messages[0] == {"role": "system", "content": entry.context}
    assistant = entry.turns[-1].speaker
    assert [m["name"] for m in messages[1:]] == [t.speaker for t in entry.turns]
    assert [m["content"] for m in messages[1:]] == [t.text for t in entry.turns]
    assert all((m["role"] == "assistant") == (m["name"] == assistant) for m in messages[1:])
    other = entry.turns[0].speaker if entry.turns[0].speaker != assistant else entry.turns[1].speaker
    assert {m["name"] for m in chat_messages(entry, other) if m["role"] == "assistant"} == {other}


def test_chat_template_matches_render_entry(tokenizer, corpus):
    for entry in corpus[:: max(1, len(corpus) // 9)]:
        text = tokenizer.apply_chat_template(chat_messages(entry), topic=entry.topic, tokenize=False)
        assert text == tokenizer.bos_token + render_entry(entry), entry.topic


def test_chat_template_produces_exactly_the_prompt_renderers_text(tokenizer, corpus):
    """One layout: for the same conversation (any prefix of an entry, with or without its topic, with or without
    the generation prompt), the chat template's text is `render_dialogue`'s, after `<s>`."""
    for entry in corpus[:: max(1, len(corpus) // 9)]:
        for n in range(len(entry.turns)):
            turns, speaker = entry.turns[:n], entry.turns[n].speaker
            messages = [{"role": "system", "content": entry.context}]
            messages += [
                {"role": "assistant" if t.speaker == speaker else "user", "name": t.speaker, "content": t.text}
                for t in turns
            ]
            for topic in (entry.topic, None):
                prompt = tokenizer.apply_chat_template(
                    messages, topic=topic, assistant_name=speaker, add_generation_prompt=True, tokenize=False
                )
                assert prompt == BOS + render_dialogue(topic, entry.context, turns, speaker), (entry.topic, n)
                text = tokenizer.apply_chat_template(messages, topic=topic, tokenize=False)
                assert text == BOS + render_dialogue(topic, entry.context, turns), (entry.topic, n)


def test_chat_template_tokenized_matches_plain_encoding(tokenizer, corpus):
    entry = corpus[1]
    expected = tokenizer(render_entry(entry))["input_ids"]  # exactly one <s>: the template's own
    ids = tokenizer.apply_chat_template(chat_messages(entry), topic=entry.topic, tokenize=True, return_dict=False)
    assert list(ids) == expected
    encoded = tokenizer.apply_chat_template(chat_messages(entry), topic=entry.topic, tokenize=True, return_dict=True)
    assert list(encoded["input_ids"]) == expected
    assert list(encoded["attention_mask"]) == [1] * len(expected)


def test_chat_template_generation_prompt(tokenizer, corpus):
    for entry in corpus[:: max(1, len(corpus) // 9)]:
        speaker = entry.turns[-1].speaker
        messages = chat_messages(entry)[:-1]
        text = tokenizer.apply_chat_template(messages, topic=entry.topic, tokenize=False, add_generation_prompt=True)
        assert text.endswith(f"\n\n{speaker}:")
        shorter = Entry(entry.topic, entry.context, entry.turns[:-1])
        assert text == tokenizer.bos_token + render_entry(shorter) + f"{speaker}:"


def test_chat_template_without_topic(tokenizer, corpus):
    entry = corpus[2]
    text = tokenizer.apply_chat_template(chat_messages(entry), tokenize=False)
    header = f"==== Topik: {entry.topic} ====\n\n"
    assert text == tokenizer.bos_token + render_entry(entry).removeprefix(header)


def test_chat_template_defaults_when_names_are_missing(tokenizer):
    messages = [
        {"role": "system", "content": "Obrolan santai."},
        {"role": "user", "content": "Halo!"},
        {"role": "assistant", "content": "Hai, ada yang bisa dibantu?"},
        {"role": "user", "content": "Cuma mau ngobrol."},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        f"<s>Konteks: Obrolan santai.\n\n{DEFAULT_USER}: Halo!\n\n{DEFAULT_ASSISTANT}: Hai, ada yang bisa dibantu?\n\n"
        f"{DEFAULT_USER}: Cuma mau ngobrol.\n\n{DEFAULT_ASSISTANT}:"
    )
    assert (DEFAULT_USER, DEFAULT_ASSISTANT) == ("Pengguna", "Asisten")
    bare = tokenizer.apply_chat_template([{"role": "user", "content": "  Halo  "}], tokenize=False)
    assert bare == "<s>Pengguna: Halo\n\n"  # content is trimmed, no generation prompt unless asked


def test_chat_template_explicit_names(tokenizer):
    messages = [
        {"role": "user", "content": "Siapa namamu?"},
        {"role": "assistant", "content": "Aku Dewi."},
        {"role": "user", "content": "Salam kenal."},
    ]
    text = tokenizer.apply_chat_template(
        messages, topic="Kenalan", tokenize=False, add_generation_prompt=True, assistant_name="Dewi", user_name="Budi"
    )
    assert (
        text == "<s>==== Topik: Kenalan ====\n\nBudi: Siapa namamu?\n\nDewi: Aku Dewi.\n\nBudi: Salam kenal.\n\nDewi:"
    )
    only_assistant = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, assistant_name="Dewi"
    )
    assert only_assistant.endswith("Pengguna: Salam kenal.\n\nDewi:")


def test_chat_template_assistant_name_overrides_the_prompt_speaker(tokenizer, corpus):
    entry = corpus[0]
    messages = chat_messages(entry)[:-1]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, assistant_name="Wulan")
    assert text.endswith("\n\nWulan:")
    # named messages keep their names
    assert f"\n\n{entry.turns[-2].speaker}: {entry.turns[-2].text}\n\n" in text


def test_chat_template_assistant_name_from_messages(tokenizer):
    messages = [
        {"role": "user", "name": "Sari", "content": "Kopi atau teh?"},
        {"role": "assistant", "name": "Bima", "content": "Kopi, dong."},
        {"role": "user", "name": "Sari", "content": "Gula?"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<s>Sari: Kopi atau teh?\n\nBima: Kopi, dong.\n\nSari: Gula?\n\nBima:"
    assert parse_back(text) == [Turn("Sari", "Kopi atau teh?"), Turn("Bima", "Kopi, dong."), Turn("Sari", "Gula?")]


def parse_back(text: str) -> list[Turn]:
    """The turns of a rendered conversation (no header/Konteks), without the trailing generation prompt."""
    body = text.removeprefix(BOS).rsplit("\n\n", 1)[0]
    return [Turn(*part.split(": ", 1)) for part in body.split("\n\n")]
