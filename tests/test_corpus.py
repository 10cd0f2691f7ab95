"""The curated corpus passes its checker (what CI runs on it), and each rule of the checker catches what it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringan.curation import check_corpus, corpus_report, file_by_split, split_of
from ringan.data import load_default_corpus

CORPUS = Path(__file__).resolve().parents[1] / "corpus"

GOOD = """==== Topik: {topic} ====

Konteks: Wulan dan kakaknya, Bagas, sedang menunggu hujan reda di teras rumah nenek di Klaten. Wulan penasaran kenapa petir selalu terlihat lebih dulu daripada suara gunturnya, dan Bagas menjelaskan beda kecepatan cahaya dan bunyi, lalu cara menghitung jarak petir dari selisih waktunya.

Wulan: Mas, kenapa kilatnya duluan, baru suaranya nyusul?

Bagas: Karena cahaya jalannya jauh lebih cepat daripada bunyi. Cahaya sampai ke mata kita hampir seketika.

Wulan: Kalau bunyinya?

Bagas: Bunyi di udara cuma sekitar tiga ratus empat puluh meter per detik. Jadi kalau petirnya jauh, suaranya telat.

Wulan: Berarti bisa buat ngukur jarak dong?

Bagas: Bisa. Hitung detik dari kilat sampai guntur, terus bagi tiga. Hasilnya kira-kira jarak dalam kilometer.

Wulan: Tadi aku hitung enam detik. Jadi dua kilometer?

Bagas: Kurang lebih begitu. Masih cukup dekat, jadi kita tetap di dalam sampai hujannya berhenti.
"""


def _letters(number: int) -> str:
    """`number` written in letters (words are letters only: digits would make every token alike)."""
    text = ""
    while True:
        number, digit = divmod(number, 26)
        text += chr(97 + digit)
        if not number:
            return "kata" + text


def distinct_entry(topic: str, seed: int) -> str:
    """A well-formed entry whose dialogue shares no word 5-gram with another seed's (so never a near-duplicate)."""
    konteks = GOOD.splitlines()[2]
    turns = [
        f"{'Wulan' if i % 2 == 0 else 'Bagas'}: " + " ".join(_letters(seed * 1000 + i * 10 + k) for k in range(8))
        for i in range(8)
    ]
    return f"==== Topik: {topic} ====\n\n{konteks}\n\n" + "\n\n".join(turns) + "\n"


def entry_text(topic: str = "Kenapa Kilat Datang Sebelum Guntur", replace: dict[str, str] | None = None) -> str:
    text = GOOD.format(topic=topic)
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def problems_of(tmp_path: Path, *texts: str) -> list[str]:
    for i, text in enumerate(texts):
        (tmp_path / f"part-{i}.txt").write_text(text, encoding="utf-8")
    _, problems = check_corpus([tmp_path])
    return [p.message for p in problems]


def test_the_curated_corpus_passes_its_checker():
    located, problems = check_corpus([CORPUS])
    assert not problems, "\n".join(map(str, problems[:20]))
    assert located, "the curated corpus is empty"
    report = corpus_report([item.entry for item in located], load_default_corpus())
    assert all(report["splits"][name] > 0 for name in ("train", "validation", "test")), report["splits"]
    assert report["distinct_topik"] == report["entries"]


def test_a_good_entry_passes(tmp_path):
    assert problems_of(tmp_path, entry_text()) == []


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"Wulan: Tadi aku hitung enam detik. Jadi dua kilometer?\n\n": ""}, "same speaker twice"),
        ({"Bagas: Bisa.": "Budi: Bisa."}, "is not named in the Konteks"),
        ({"Cahaya sampai": "Saya kira cahaya sampai"}, "'Saya'"),
        ({"Cahaya sampai": "Gue kira cahaya sampai"}, "no gue/lo"),
        ({"Bagas: Karena cahaya": "Bagas: Pertanyaan bagus. Karena cahaya"}, "stock phrase"),
        ({GOOD.splitlines()[2]: "Konteks: Wulan dan Bagas ngobrol soal petir."}, "Konteks has"),
    ],
)
def test_each_rule_catches_what_it_names(tmp_path, change, expected):
    messages = problems_of(tmp_path, entry_text(replace=change))
    assert any(expected in m for m in messages), messages


def test_formal_speech_is_allowed_where_the_konteks_says_so(tmp_path):
    formal = entry_text(
        replace={
            "Cahaya sampai": "Saya kira cahaya sampai",
            "dan Bagas menjelaskan": "dan Bagas yang sedang berlatih bicara formal menjelaskan",
        }
    )
    assert problems_of(tmp_path, formal) == []


def test_too_few_turns(tmp_path):
    short = entry_text().split("\n\nWulan: Berarti")[0] + "\n"
    assert any("turns: expected" in m for m in problems_of(tmp_path, short))


def test_repeated_topik_and_near_duplicates_across_files(tmp_path):
    first = entry_text()
    messages = problems_of(tmp_path, first, entry_text())
    assert any("Topik repeated" in m for m in messages), messages
    (tmp_path / "part-1.txt").unlink()
    reworded = entry_text("Menghitung Jarak Petir dari Suaranya", {"Mas, kenapa": "Kak, kenapa"})
    messages = problems_of(tmp_path, first, reworded)
    assert any("near-duplicate" in m for m in messages), messages


def test_split_is_fixed_by_topik_and_near_the_planned_shares():
    assert split_of("Kenapa Langit Biru") == split_of("  kenapa langit BIRU? ")
    shares = [split_of(f"Topik nomor {i}") for i in range(4000)]
    assert 0.035 < shares.count("test") / 4000 < 0.065
    assert 0.035 < shares.count("validation") / 4000 < 0.065


def test_filing_drafts_puts_every_entry_in_its_topiks_split(tmp_path):
    drafts, root = tmp_path / "drafts", tmp_path / "corpus"
    drafts.mkdir()
    topics = [f"Kilat dan Guntur bagian {word}" for word in ("satu", "dua", "tiga", "empat", "lima", "enam")]
    texts = [distinct_entry(t, seed) for seed, t in enumerate(topics)]
    (drafts / "sains-001.txt").write_text("\n\n".join(texts), encoding="utf-8")
    counts = file_by_split([drafts], root)
    assert sum(counts.values()) == len(topics) and not (drafts / "sains-001.txt").exists()
    located, problems = check_corpus([root])
    assert not problems and sorted(i.entry.topic for i in located) == sorted(topics)
    for item in located:
        assert Path(item.source).parent.name == split_of(item.entry.topic)
    stray = next(t for t in (f"Topik salah tempat {i}" for i in range(100)) if split_of(t) != "test")
    (root / "test").mkdir(exist_ok=True)
    (root / "test" / "x.txt").write_text(entry_text(stray), encoding="utf-8")
    _, problems = check_corpus([root])
    assert any("filed under test/" in p.message for p in problems), problems
