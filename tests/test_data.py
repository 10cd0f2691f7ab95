"""Tests of the dialogue file format and the dataset helpers in `ringan.data`."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringan.data import (
    UNKNOWN,
    DialogueFormatError,
    Entry,
    LabelVocab,
    Turn,
    build_dataset,
    corpus_statistics,
    default_corpus_path,
    entries_to_records,
    load_default_corpus,
    parse,
    read_dialogues,
    records_to_entries,
    render,
    render_entry,
    split_entries,
    write_dialogues,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
THEMES = {"filsafat", "psikologi", "sains", "sosial", "teknologi"}

CLEAN = """\
==== Topik: Kopi Pagi di Warung ====

Konteks: Sari dan Bima ngobrol di warung kopi dekat kampus sebelum kuliah pagi.

Sari: Bim, kamu udah sarapan belum? Mukamu pucat banget.

Bima: Belum, nih: cuma kopi aja dari tadi. Jam 07:30 udah harus masuk kelas.

Sari: Ya ampun, makan dulu dong. Nasi uduknya enak, lho.


==== Topik: Hujan dan Kenangan ====

Konteks: Dewi menatap hujan dari jendela kamar kos; Andi, teman satu kosnya, menghampiri.

Andi: Wi, kok melamun? Kangen rumah, ya?

Dewi: Iya... bau tanah basah selalu bikin aku ingat kampung.

Andi: Wajar kok. Ada istilahnya juga, petrichor.
"""


@pytest.fixture(scope="module")
def clean_entries() -> list[Entry]:
    return parse(CLEAN)


@pytest.fixture(scope="module")
def corpus() -> list[Entry]:
    return load_default_corpus()


def write(tmp_path: Path, content: str | bytes, name: str = "dialog.txt") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def read_error(path: Path) -> DialogueFormatError:
    with pytest.raises(DialogueFormatError) as info:
        read_dialogues(path)
    return info.value


def assert_error_at(err: DialogueFormatError, path: Path, line: int, *fragments: str) -> None:
    message = str(err)
    assert err.source == str(path)
    assert err.line == line
    assert message.startswith(f"{path}:{line}: "), message
    for fragment in fragments:
        assert fragment in message, message


# ------------------------------------------------------------------------------------------- the clean text


def test_clean_text_parses_to_the_expected_entries(clean_entries):
    assert [e.topic for e in clean_entries] == ["Kopi Pagi di Warung", "Hujan dan Kenangan"]
    first = clean_entries[0]
    assert first.context == "Sari dan Bima ngobrol di warung kopi dekat kampus sebelum kuliah pagi."
    assert first.turns[1] == Turn("Bima", "Belum, nih: cuma kopi aja dari tadi. Jam 07:30 udah harus masuk kelas.")
    assert first.speakers == ["Sari", "Bima"]
    assert clean_entries[1].speakers == ["Andi", "Dewi"]
    assert render(clean_entries) == CLEAN + "\n"


def test_write_then_read_round_trip(tmp_path, clean_entries):
    path = tmp_path / "out.txt"
    write_dialogues(path, clean_entries)
    assert read_dialogues(path) == clean_entries
    assert read_dialogues(str(path)) == clean_entries


def test_folder_reads_txt_files_sorted_and_ignores_others(tmp_path, clean_entries):
    write(tmp_path, render(clean_entries[1:]), "b.txt")
    write(tmp_path, render(clean_entries[:1]), "a.txt")
    write(tmp_path, "not a dialogue file", "notes.md")
    assert read_dialogues(tmp_path) == clean_entries
    assert read_dialogues([tmp_path / "b.txt", tmp_path / "a.txt"]) == clean_entries[::-1]


# ------------------------------------------------------------------------------------------------ errors


def test_error_text_before_first_header(tmp_path):
    path = write(tmp_path, "\n\nHalo semua, ini catatan.\n\n" + CLEAN)
    assert_error_at(read_error(path), path, 3, "text before the first entry")


def test_error_empty_topic(tmp_path):
    path = write(tmp_path, CLEAN + "\n\n==== Topik:    ====\n\nKonteks: Sesuatu.\n\nA: halo\n")
    line = CLEAN.count("\n") + 3
    assert_error_at(read_error(path), path, line, "empty topic")


def test_error_missing_konteks_line(tmp_path):
    path = write(tmp_path, "==== Topik: Tanpa Konteks ====\n\nSari: Halo, Bima.\n\nBima: Halo juga.\n")
    assert_error_at(read_error(path), path, 3, "expected 'Konteks: <paragraph>'")


def test_error_missing_konteks_at_end_of_file(tmp_path):
    path = write(tmp_path, CLEAN + "\n\n==== Topik: Hanya Judul ====\n\n")
    line = CLEAN.count("\n") + 3
    assert_error_at(read_error(path), path, line, "'Hanya Judul' has no 'Konteks")


def test_error_empty_konteks(tmp_path):
    path = write(tmp_path, "==== Topik: Kosong ====\n\nKonteks:   \t\n\nSari: Halo.\n")
    assert_error_at(read_error(path), path, 3, "empty Konteks")


def test_error_entry_without_turns_followed_by_another_entry(tmp_path):
    text = (
        "==== Topik: Pertama ====\n\nKonteks: Satu.\n\nA: halo\n\n==== Topik: Tanpa Giliran ====\n\nKonteks: Dua.\n\n\n"
    )
    path = write(tmp_path, text + "==== Topik: Ketiga ====\n\nKonteks: Tiga.\n\nB: hai\n")
    assert_error_at(read_error(path), path, 7, "'Tanpa Giliran' has no dialogue turns")


def test_error_entry_without_turns_at_end_of_file(tmp_path):
    path = write(tmp_path, CLEAN + "\n==== Topik: Terakhir ====\n\nKonteks: Tidak ada yang bicara.\n\n")
    line = CLEAN.count("\n") + 2
    assert_error_at(read_error(path), path, line, "'Terakhir' has no dialogue turns")


def test_error_turn_without_name_prefix(tmp_path):
    text = "==== Topik: T ====\n\nKonteks: K.\n\nSari: Halo.\n\nini kalimat tanpa nama pembicara\n"
    path = write(tmp_path, text)
    assert_error_at(read_error(path), path, 7, "expected a turn 'Name: utterance'", "ini kalimat tanpa nama")


def test_error_turn_with_reserved_speaker(tmp_path):
    path = write(tmp_path, "==== Topik: T ====\n\nKonteks: K.\n\nSari: Halo.\n\nKonteks: lagi\n")
    assert_error_at(read_error(path), path, 7, "expected a turn 'Name: utterance'")


def test_error_empty_utterance(tmp_path):
    path = write(tmp_path, "==== Topik: T ====\n\nKonteks: K.\n\nSari: Halo.\n\nBima:   \n")
    assert_error_at(read_error(path), path, 7, "empty utterance after 'Bima:'")


def test_error_header_not_closed(tmp_path):
    path = write(tmp_path, CLEAN + "\n\n==== Topik: Lupa Ditutup\n\nKonteks: K.\n\nA: halo\n")
    line = CLEAN.count("\n") + 3
    assert_error_at(read_error(path), path, line, "header is not closed")


def test_error_header_closed_with_too_few_equals(tmp_path):
    path = write(tmp_path, "==== Topik: Hampir ===\n\nKonteks: K.\n\nA: halo\n")
    assert_error_at(read_error(path), path, 1, "header is not closed")


def test_error_malformed_header(tmp_path):
    path = write(tmp_path, "==== Topic: Salah Eja ====\n\nKonteks: K.\n\nA: halo\n")
    assert_error_at(read_error(path), path, 1, "expected '==== Topik: <title> ===='")


def test_indented_header_is_a_header_never_a_turn(tmp_path):
    text = "==== Topik: A ====\n\nKonteks: K.\n\nA: halo\n\n  ==== Topik: B ====\n\nKonteks: L.\n\nB: hai\n"
    entries = read_dialogues(write(tmp_path, text))
    assert [e.topic for e in entries] == ["A", "B"] and [t.speaker for e in entries for t in e.turns] == ["A", "B"]


# invisible characters a copy from a web page or a word processor leaves at the start (or end) of a line
INVISIBLE = {"zero-width space": "\u200b", "no-break space": "\u00a0", "BOM": "\ufeff", "word joiner": "\u2060"}


@pytest.mark.parametrize("char", INVISIBLE.values(), ids=INVISIBLE.keys())
def test_invisible_characters_at_line_edges_are_normalised(tmp_path, clean_entries, char):
    """Decided: normalised (removed), on every line, so `\u200b==== Topik` is the header it looks like, and a
    name or utterance never keeps an invisible edge; inside text they are kept."""
    text = "\n".join(char + line + char if line else line for line in CLEAN.split("\n"))
    assert read_dialogues(write(tmp_path, text)) == clean_entries
    inner = f"==== Topik: A{char}B ====\n\nKonteks: K.\n\nSari: ha{char}lo\n"
    (entry,) = read_dialogues(write(tmp_path, inner, "inner.txt"))
    assert entry.topic == f"A{char}B" and entry.turns[0].text == f"ha{char}lo"
    with pytest.raises(ValueError, match="invisible"):
        Turn("Sari", "halo" + char)


def test_zero_width_space_before_a_header_never_makes_a_turn(tmp_path):
    """Before this was decided, `\u200b==== Topik: B ====` inside an entry was a turn of speaker
    `\u200b==== Topik` saying `B ====`: entry B silently vanished into entry A."""
    text = "==== Topik: A ====\n\nKonteks: K.\n\nSari: halo\n\n\u200b==== Topik: B ====\n\nKonteks: L.\n\nBima: hai\n"
    entries = read_dialogues(write(tmp_path, text))
    assert [(e.topic, [t.speaker for t in e.turns]) for e in entries] == [("A", ["Sari"]), ("B", ["Bima"])]


WRAPPED = {  # (text, the line of the error)
    # an XPersona persona wrapped onto a second line: "Tentang B:" would become a speaker
    "konteks": (
        "==== Topik: T ====\n\nKonteks: Persona B: aku suka kopi.\nTentang B: aku punya kucing.\n\nA: halo\n",
        4,
    ),
    "utterance": ("==== Topik: T ====\n\nKonteks: K.\n\nA: kemarin aku ke pasar, lalu\nIbu bilang: beli ikan ya\n", 6),
    "turn after konteks": ("==== Topik: T ====\n\nKonteks: K.\nA: halo\n", 4),
}


@pytest.mark.parametrize(("text", "line"), WRAPPED.values(), ids=WRAPPED.keys())
def test_a_wrapped_line_is_an_error_never_a_new_speaker(tmp_path, text, line):
    path = write(tmp_path, text)
    assert_error_at(read_error(path), path, line, "no blank line between", "one line")


def test_error_messages_quote_at_most_200_characters_of_the_line(tmp_path):
    long_line = "tanpa nama " * 500
    path = write(tmp_path, f"==== Topik: T ====\n\nKonteks: K.\n\nSari: halo\n\n{long_line}\n")
    message = str(read_error(path))
    assert "tanpa nama" in message and len(message) < len(str(path)) + 400, len(message)
    with pytest.raises(ValueError) as info:
        Entry("T" + " x" * 2000 + " =", "k", (Turn("A", "b"),))
    assert len(str(info.value)) < 400


def test_error_not_utf8_names_line_and_column(tmp_path):
    data = CLEAN.encode("utf-8").replace(b"Hujan dan Kenangan", b"Hujan dan Ken\xe9ngan")  # Latin-1 'é'
    path = write(tmp_path, data)
    line = CLEAN.splitlines().index("==== Topik: Hujan dan Kenangan ====") + 1
    column = len("==== Topik: Hujan dan Ken") + 1
    err = read_error(path)
    assert_error_at(err, path, line, "not valid UTF-8", "0xe9", f"column {column}")


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_error_not_utf8_counts_lines_like_the_parser(tmp_path, newline):
    data = b"==== Topik: T ====\n\nKonteks: K.\n\nA: caf\xff\n".replace(b"\n", newline)
    path = write(tmp_path, data)
    assert_error_at(read_error(path), path, 5, "not valid UTF-8", "0xff", "column 7")


def test_error_empty_file(tmp_path):
    path = write(tmp_path, "\n\n  \n")
    assert_error_at(read_error(path), path, 1, "no entries")


def test_error_missing_file(tmp_path):
    path = tmp_path / "tidak-ada.txt"
    with pytest.raises(FileNotFoundError, match="no such dialogue file") as info:
        read_dialogues(path)
    assert str(path) in str(info.value)


def test_error_folder_without_txt_files(tmp_path):
    write(tmp_path, "catatan", "readme.md")
    with pytest.raises(FileNotFoundError, match="folder has no .txt dialogue files") as info:
        read_dialogues(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_parse_error_uses_the_given_source_name():
    with pytest.raises(DialogueFormatError, match=r"^mine\.txt:1: "):
        parse("halo", "mine.txt")
    with pytest.raises(DialogueFormatError, match=r"^<string>:1: "):
        parse("halo")


# --------------------------------------------------------------------------------------------- tolerance


def test_tolerates_utf8_bom(tmp_path, clean_entries):
    assert read_dialogues(write(tmp_path, b"\xef\xbb\xbf" + CLEAN.encode("utf-8"))) == clean_entries


@pytest.mark.parametrize("newline", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_tolerates_line_endings(tmp_path, clean_entries, newline):
    assert read_dialogues(write(tmp_path, CLEAN.replace("\n", newline))) == clean_entries


def test_tolerates_trailing_spaces_and_tabs(tmp_path, clean_entries):
    text = "\n".join(line + (" \t  " if i % 2 else "\t") for i, line in enumerate(CLEAN.split("\n")))
    assert read_dialogues(write(tmp_path, text)) == clean_entries


def test_tolerates_extra_blank_lines(tmp_path, clean_entries):
    text = "\n\n \n" + CLEAN.replace("\n\n", "\n\n\n \n\t\n") + "\n\n\n"
    assert read_dialogues(write(tmp_path, text)) == clean_entries
    # a header needs no blank line around it; every other part does (a line right after a Konteks or an utterance
    # could be that text wrapped onto a second line)
    tight_headers = CLEAN.replace("====\n\nKonteks", "====\nKonteks").replace("\n\n\n==== Topik", "\n==== Topik")
    assert read_dialogues(write(tmp_path, tight_headers)) == clean_entries
    no_blank_lines = "\n".join(line for line in CLEAN.split("\n") if line)
    assert_error_at(read_error(write(tmp_path, no_blank_lines)), tmp_path / "dialog.txt", 3, "no blank line between")


def test_tolerates_everything_at_once(tmp_path, clean_entries):
    text = "\n\n" + "\n".join(line + "  " for line in CLEAN.replace("\n\n", "\n\n\n").split("\n"))
    data = b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8")
    assert read_dialogues(write(tmp_path, data)) == clean_entries


# ----------------------------------------------------------------------------------- Entry/Turn properties

WORDS = [
    "apa",
    "kabar",
    "ngobrol",
    "sih",
    "dong",
    "café",
    "Pak Budi",
    "Bu Sri",
    "jam 07:30",
    "nih:",
    "👍",
    "ñ",
    "Ê",
    "=",
]


def one_line(min_size: int = 1, max_size: int = 60) -> st.SearchStrategy[str]:
    """Mostly Indonesian-ish words (with colons and accents), sometimes arbitrary Unicode, never a newline."""
    arbitrary = st.text(st.characters(blacklist_categories=("Cs",)), min_size=min_size, max_size=max_size)
    words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join)
    return st.one_of(words, arbitrary)


def accepted(make) -> bool:
    try:
        make()
    except ValueError:
        return False
    return True


speakers = st.one_of(
    st.sampled_from(["Sari", "Bima", "Pak Budi", "Bu Ñoman", "A", "B", "Konteks 2", "=x", "===y", "====Budi"]),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=45),
).filter(lambda s: accepted(lambda: Turn(s, "x")))
utterances = one_line(max_size=120).filter(lambda s: accepted(lambda: Turn("A", s)))
turns = st.builds(Turn, speakers, utterances)
topics = one_line().filter(lambda s: accepted(lambda: Entry(s, "k", (Turn("A", "b"),))))
contexts = one_line(max_size=200).filter(lambda s: accepted(lambda: Entry("t", s, (Turn("A", "b"),))))
entries = st.builds(Entry, topics, contexts, st.lists(turns, min_size=1, max_size=6).map(tuple))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(entries, max_size=4))
def test_parse_inverts_render(xs):
    text = render(xs)
    assert parse(text) == xs
    assert parse(text.replace("\n", "\r\n")) == xs


def test_colons_and_unicode_in_utterances_survive():
    entry = Entry(
        "Ngopi: Seni Menunggu",
        "Konteks: kedai kopi jam 21:00.",
        (Turn("Bu Ñoman", "Rasio 1:15, ya? Café-nya ramé 😄"),),
    )
    assert parse(render_entry(entry)) == [entry]


@pytest.mark.parametrize(
    "speaker",
    ["", " Sari", "Sari ", "Sa\nri", "Sa\rri", "Sa:ri", "Sari:", "Konteks", "Topik", "x" * 41, "====", "==== Topik"],
)
def test_turn_rejects_invalid_speaker(speaker):
    with pytest.raises(ValueError):
        Turn(speaker, "halo")


def test_turn_accepts_forty_character_speaker():
    assert parse(render_entry(Entry("t", "k", (Turn("x" * 40, "halo"),))))[0].turns[0].speaker == "x" * 40


@pytest.mark.parametrize("text", ["", " halo", "halo ", "\thalo", "ha\nlo", "ha\rlo", "   "])
def test_turn_rejects_invalid_utterance(text):
    with pytest.raises(ValueError):
        Turn("Sari", text)


@pytest.mark.parametrize("topic", ["", " T", "T ", "T\nU", "a ==== b", "judul =", "===="])
def test_entry_rejects_invalid_topic(topic):
    with pytest.raises(ValueError):
        Entry(topic, "konteks", (Turn("A", "b"),))


@pytest.mark.parametrize("context", ["", " K", "K ", "K\nL", "K\rL"])
def test_entry_rejects_invalid_context(context):
    with pytest.raises(ValueError):
        Entry("topik", context, (Turn("A", "b"),))


def test_entry_rejects_no_turns_and_stores_a_tuple():
    with pytest.raises(ValueError, match="no turns"):
        Entry("topik", "konteks", ())
    entry = Entry("topik", "konteks", [Turn("A", "b")])  # type: ignore[arg-type]
    assert isinstance(entry.turns, tuple)
    hash(entry)


# ---------------------------------------------------------------------------------------------- corpora


def test_shipped_corpus(corpus):
    """The default finds every shipped entry: counted from the installed package's files by another route (header
    lines in the raw text), 45 as the README says."""
    import ringan

    files = sorted((Path(ringan.__file__).parent / "corpus").glob("*.txt"))
    headers = sum(f.read_text(encoding="utf-8").count("\n==== Topik: ") + 1 for f in files)
    assert default_corpus_path().resolve() == files[0].parent.resolve()
    assert len(corpus) == headers == 45
    assert {e.topic for e in corpus} == {e.topic for f in files for e in parse(f.read_text(encoding="utf-8"))}
    for entry in corpus:
        assert len(entry.turns) >= 10, entry.topic
        assert len(entry.speakers) >= 2, entry.topic
    assert len({e.topic for e in corpus}) == len(corpus)
    assert len({e.context for e in corpus}) == len(corpus)


def test_shipped_corpus_has_the_five_themes():
    files = sorted(default_corpus_path().glob("*.txt"))
    assert {f.stem for f in files} == THEMES
    for file in files:
        assert len(read_dialogues(file)) >= 5, file.name


def test_shipped_corpus_renders_back_to_its_files():
    for file in sorted(default_corpus_path().glob("*.txt")):
        text = file.read_text(encoding="utf-8")
        assert parse(render(parse(text))) == parse(text)


def test_corpus_statistics(corpus):
    stats = corpus_statistics(corpus)
    assert stats["entries"] == stats["topics"] == stats["contexts"] == len(corpus)
    assert stats["turns"] == sum(len(e.turns) for e in corpus) >= 10 * len(corpus)
    assert stats["speakers"] == len({t.speaker for e in corpus for t in e.turns})
    assert stats["characters"] == sum(len(render_entry(e)) for e in corpus)


def test_xpersona_validation_file():
    path = SHARED_DATA / "xpersona-id-valid.txt"
    if not path.is_file():
        pytest.skip(f"{path} is not present (shared data is optional)")
    xs = read_dialogues(path)
    assert len(xs) == 484
    assert all(len(e.speakers) >= 2 for e in xs)
    assert parse(render(xs)) == xs


# ------------------------------------------------------------------------------------------- LabelVocab


def test_label_vocab_reserves_id_zero():
    vocab = LabelVocab(["Kopi", "Hujan"])
    assert vocab.names == [UNKNOWN, "Kopi", "Hujan"]
    assert len(vocab) == 3
    assert vocab.id(UNKNOWN) == 0
    assert (vocab.id("Kopi"), vocab.id("Hujan")) == (1, 2)
    assert LabelVocab([UNKNOWN, "a"]).names == [UNKNOWN, "a"]
    assert LabelVocab(["a", UNKNOWN, "b"]).names == [UNKNOWN, "a", "b"]
    assert LabelVocab([]).names == [UNKNOWN]


def test_label_vocab_unknown_names_map_to_zero():
    vocab = LabelVocab(["Kopi"])
    assert vocab.id("Teh") == 0
    assert vocab.id("kopi") == 0
    assert vocab.id("") == 0
    assert vocab.id(None) == 0


def test_label_vocab_json_round_trip(corpus):
    vocab = LabelVocab.build([e.topic for e in corpus] + ["Kafé Ñoman ☕"], max_size=100)
    text = vocab.to_json()
    assert "Kafé Ñoman ☕" in text  # stored readable, not \u-escaped
    assert json.loads(text) == vocab.names
    again = LabelVocab.from_json(text)
    assert again.names == vocab.names
    assert all(again.id(n) == vocab.id(n) == i for i, n in enumerate(vocab.names))


def test_label_vocab_build_keeps_first_seen_order():
    vocab = LabelVocab.build(["b", "a", "b", "c"], max_size=4)
    assert vocab.names == [UNKNOWN, "b", "a", "c"]


def test_label_vocab_build_fits_exactly_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vocab = LabelVocab.build(["a", "b", "a"], max_size=3, on_overflow="unknown")
    assert vocab.names == [UNKNOWN, "a", "b"]


def test_label_vocab_overflow_raises_by_default():
    with pytest.raises(ValueError) as info:
        LabelVocab.build(["a", "b", "c", "a"], max_size=3, what="topics")
    message = str(info.value)
    assert "3 distinct topics" in message
    assert "3 rows" in message
    assert "2 after row 0" in message
    assert "num_topics to at least 4" in message


def test_label_vocab_overflow_unknown_keeps_most_frequent_and_warns():
    values = ["c", "a", "b", "a", "d", "b", "a", "e"]  # a:3 b:2 c:1 d:1 e:1
    with pytest.warns(UserWarning, match=r"5 distinct contexts .* 3 most frequent keep an id, 2 entries use id 0"):
        vocab = LabelVocab.build(values, max_size=4, what="contexts", on_overflow="unknown")
    # a, b (most frequent) and c (first seen among the ties), in first-seen order
    assert vocab.names == [UNKNOWN, "c", "a", "b"]
    assert [vocab.id(v) for v in values] == [1, 2, 3, 2, 0, 3, 2, 0]


def test_label_vocab_overflow_unknown_ties_break_by_first_seen():
    with pytest.warns(UserWarning):
        vocab = LabelVocab.build(["x", "y", "z", "y", "x"], max_size=2, on_overflow="unknown")
    assert vocab.names == [UNKNOWN, "x"]


def test_label_vocab_rejects_bad_overflow_policy():
    with pytest.raises(ValueError, match="on_overflow must be"):
        LabelVocab.build(["a", "b"], max_size=2, on_overflow="drop")


# ---------------------------------------------------------------------------------------------- splits


def test_split_is_deterministic_disjoint_and_complete(corpus):
    train, val = split_entries(corpus, 0.1, seed=0)
    assert (train, val) == split_entries(corpus, 0.1, seed=0)
    assert len(val) == math.ceil(len(corpus) * 0.1)
    assert len(train) + len(val) == len(corpus)
    assert not {e.topic for e in train} & {e.topic for e in val}
    assert {e.topic for e in train} | {e.topic for e in val} == {e.topic for e in corpus}
    # both halves keep the corpus order
    val_topics = {e.topic for e in val}
    assert train == [e for e in corpus if e.topic not in val_topics]
    assert val == [e for e in corpus if e.topic in val_topics]


def test_split_depends_on_seed(corpus):
    splits = {tuple(e.topic for e in split_entries(corpus, 0.2, seed=s)[1]) for s in range(4)}
    assert len(splits) > 1
    assert split_entries(corpus, 0.2, seed=0)[1] != split_entries(corpus, 0.2, seed=1)[1]


def test_split_edge_cases(corpus):
    assert split_entries(corpus, 0.0) == (list(corpus), [])
    assert split_entries(corpus[:1], 0.5) == (list(corpus[:1]), [])
    assert split_entries([], 0.1) == ([], [])
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="validation_fraction"):
            split_entries(corpus, bad)


# -------------------------------------------------------------------------------------------- datasets

COLUMNS = {"topic", "context", "speakers", "utterances", "text"}


def make_entries(n: int, prefix: str) -> list[Entry]:
    return [
        Entry(
            f"{prefix} {i}",
            f"Konteks nomor {i} untuk {prefix}.",
            (Turn("Sari", f"Halo {i}: apa kabar?"), Turn("Bima", "Baik, kamu?"), Turn("Sari", "Baik juga.")),
        )
        for i in range(n)
    ]


def test_build_dataset(tmp_path):
    entries = make_entries(6, "Satu") + make_entries(4, "Dua")
    write_dialogues(tmp_path / "a.txt", entries[:6])
    write_dialogues(tmp_path / "b.txt", entries[6:])
    ds = build_dataset(tmp_path, validation_fraction=0.2, seed=3)
    assert set(ds) == {"train", "validation"}
    assert (ds["train"].num_rows, ds["validation"].num_rows) == (8, 2)
    for split in ds.values():
        assert set(split.column_names) == COLUMNS
    train, val = split_entries(entries, 0.2, seed=3)
    assert records_to_entries(ds["train"]) == train
    assert records_to_entries(ds["validation"]) == val
    row = ds["train"][0]
    assert row["text"] == render_entry(train[0])
    assert row["speakers"] == ["Sari", "Bima", "Sari"]
    # a list of files gives the same
    same = build_dataset([tmp_path / "a.txt", tmp_path / "b.txt"], validation_fraction=0.2, seed=3)
    assert same["validation"]["topic"] == ds["validation"]["topic"]


def test_build_dataset_empty_validation_keeps_columns(tmp_path):
    write_dialogues(tmp_path / "a.txt", make_entries(3, "T"))
    ds = build_dataset(tmp_path / "a.txt", validation_fraction=0.0)
    assert (ds["train"].num_rows, ds["validation"].num_rows) == (3, 0)
    assert ds["validation"].features == ds["train"].features
    assert set(ds["validation"].column_names) == COLUMNS


def test_build_dataset_propagates_format_errors(tmp_path):
    path = write(tmp_path, "==== Topik: T ====\n\nKonteks: K.\n\nSari halo\n")
    with pytest.raises(DialogueFormatError, match=r":5: expected a turn"):
        build_dataset(path)


def test_records_to_entries_inverts_entries_to_records(corpus):
    records = entries_to_records(corpus)
    assert set(records[0]) == COLUMNS
    assert records[0]["text"] == render_entry(corpus[0])
    assert records_to_entries(records) == corpus
    bad = dict(records[0], utterances=records[0]["utterances"][:-1])
    with pytest.raises(ValueError):
        records_to_entries([bad])
