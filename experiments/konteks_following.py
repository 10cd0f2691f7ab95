"""Does a model follow its Konteks? Two measures on the curated test split (Topik never seen in training), for
several models side by side (issue: curated corpus, §3).

(a) **Bits per byte of the turns** with the entry's own Topik/Konteks vs another test entry's (same dialogue).
    The other entry's speaker names are replaced by this entry's, so the two headers differ in content only. A
    model that uses its Konteks scores its own lower: the goal is >= 3% lower.
(b) **Replies under their own vs another Konteks**: after the header and the dialogue's first turn, the second
    speaker's reply is generated (greedy) once under the entry's own header and once under the partner's. An
    independent measure decides which Konteks each reply is about: the content words (4+ letters, not stop
    words, not names, not in the first turn) it shares with each. A reply follows its own Konteks when it shares
    more with it; a tie counts half (chance is 50%). The goal is >= 70%.

Also writes `samples.md`: replies for the first test Konteks, greedy and sampled, from each model.

    python experiments/konteks_following.py MODEL [MODEL ...] [--tag NAME]   # e.g. ringan/base runs/ringan-base/model
"""

from __future__ import annotations

import argparse
import math
import random
import re
import sys
from dataclasses import replace

import protocol as P
import torch

from ringan.commands.generate import generate_reply
from ringan.data import Entry, read_dialogues, render_dialogue
from ringan.training import evaluate_by_speaker

TEST = P.REPO / "corpus" / "test"
OUT = P.RESULTS / "konteks"
HEADER = "(Topik/Konteks)"
MAX_NEW_TOKENS = 48
SAMPLES = 20
STOP_WORDS = set(
    """yang dengan untuk dari pada dalam atau juga akan sudah udah tidak nggak bisa karena kalau tapi lebih
    sama mereka kita kami dia aku kamu ini itu ada jadi saja aja buat biar masih lagi soal tentang sambil
    setelah sebelum supaya agar harus bagaimana gimana kenapa mengapa apa siapa mana kapan banyak sedikit
    semua setiap sangat banget belum pernah terus sedang mulai antara hingga sampai seperti kayak begitu gitu
    bagi oleh para pun lalu kemudian namun bahwa tanpa sejak ketika saat waktu hari tahun orang teman""".split()
)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def partners(entries: list[Entry], seed: int = 0) -> list[int]:
    """For each entry, another entry with as many speakers (a seeded derangement within each group)."""
    groups: dict[int, list[int]] = {}
    for i, entry in enumerate(entries):
        groups.setdefault(len(entry.speakers), []).append(i)
    partner = list(range(len(entries)))
    rng = random.Random(seed)
    for members in groups.values():
        if len(members) < 2:
            continue
        order = members[:]
        rng.shuffle(order)
        for a, b in zip(order, order[1:] + order[:1], strict=True):
            partner[a] = b
    return partner


def header_of(entry: Entry, other: Entry) -> tuple[str, str]:
    """`other`'s Topik and Konteks with its speakers renamed to `entry`'s (in order of first turn), in one pass."""
    mapping = dict(zip(other.speakers, entry.speakers, strict=False))
    names = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(mapping, key=len, reverse=True)) + r")\b")
    return tuple(names.sub(lambda m: mapping[m.group(1)], text) for text in (other.topic, other.context))


def turn_bits_per_byte(model, tok, entries: list[Entry]) -> float:
    """Bits per byte of every turn (the header excluded), over all entries."""
    turns = [m for name, m in evaluate_by_speaker(model, tok, entries).items() if name != HEADER]
    bits = [m["loss"] * m["tokens"] / math.log(2) for m in turns]
    return sum(bits) / sum(b / m["bits_per_byte"] for b, m in zip(bits, turns, strict=True))


def content_words(text: str, exclude: set[str]) -> set[str]:
    return {w for w in (m.lower() for m in _WORD.findall(text)) if len(w) >= 4 and w not in STOP_WORDS} - exclude


@torch.no_grad()
def reply(model, tok, entry: Entry, topic: str, context: str, sample: bool, seed: int = 0) -> str:
    """The second speaker's reply to the first turn, under the given Topik/Konteks (as `ringan generate` does it)."""
    prompt = render_dialogue(topic, context, entry.turns[:1], next_speaker=entry.turns[1].speaker)
    sampling = {"do_sample": True, "temperature": 0.8, "top_p": 0.95} if sample else {"do_sample": False}
    torch.manual_seed(seed)
    return generate_reply(model, tok, prompt, 0, 0, MAX_NEW_TOKENS, sampling, topic=topic, context=context)


def measure(folder: str, entries: list[Entry], partner: list[int]) -> tuple[dict, list[dict]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import ringan  # noqa: F401  (registers the model classes)

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    swapped = [
        replace(e, topic=h[0], context=h[1])
        for e, h in ((e, header_of(e, entries[partner[i]])) for i, e in enumerate(entries))
    ]
    own_bpb, other_bpb = turn_bits_per_byte(model, tok, entries), turn_bits_per_byte(model, tok, swapped)
    follows, ties, rows = 0.0, 0, []
    for i, entry in enumerate(entries):
        other = swapped[i]
        names = {w.lower() for s in entry.speakers for w in _WORD.findall(s)}
        exclude = names | content_words(entry.turns[0].text, set())
        own_words, other_words = content_words(entry.context, exclude), content_words(other.context, exclude)
        for under, mine, theirs in ((entry, own_words, other_words), (other, other_words, own_words)):
            text = reply(model, tok, entry, under.topic, under.context, sample=False)
            said = content_words(text, set())
            a, b = len(said & mine), len(said & theirs)
            follows += 1.0 if a > b else 0.5 if a == b else 0.0
            ties += a == b
            rows.append({"entry": entry.topic, "under_own": under is entry, "reply": text, "own": a, "other": b})
    n = 2 * len(entries)
    result = {
        "model": folder,
        "entries": len(entries),
        "turn_bpb_own": own_bpb,
        "turn_bpb_other": other_bpb,
        "own_vs_other": own_bpb / other_bpb - 1,
        "replies_following_own": follows / n,
        "ties": ties / n,
    }
    samples = [
        {
            "topic": e.topic,
            "first_turn": f"{e.turns[0].speaker}: {e.turns[0].text}",
            "greedy": f"{e.turns[1].speaker}: {reply(model, tok, e, e.topic, e.context, sample=False)}",
            "sampled": f"{e.turns[1].speaker}: {reply(model, tok, e, e.topic, e.context, sample=True, seed=k)}",
        }
        for k, e in enumerate(entries[:SAMPLES])
    ]
    return {**result, "replies": rows}, samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="saved model folders (e.g. ringan/base)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    entries = [e for e in read_dialogues(TEST) if len(e.turns) >= 2]
    partner = partners(entries)
    report, lines = {}, ["# Replies for test-split Konteks (first turn given; greedy and sampled)\n"]
    for folder in args.models:
        result, samples = measure(folder, entries, partner)
        report[folder] = result
        print(
            f"{folder}: turns {result['turn_bpb_own']:.4f} bits/byte with own Konteks, {result['turn_bpb_other']:.4f}"
            f" with another ({result['own_vs_other']:+.1%}); replies following own {result['replies_following_own']:.1%}"
            f" (ties {result['ties']:.1%})"
        )
        lines.append(f"\n## {folder}\n")
        for s in samples:
            lines.append(
                f"\n**{s['topic']}**\n\n> {s['first_turn']}\n\n- greedy: {s['greedy']}\n- sampled: {s['sampled']}\n"
            )
    P.write_json(OUT / f"konteks{args.tag}.json", report)
    (OUT / f"samples{args.tag}.md").write_text("".join(lines), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
