"""Experiment 4: what does the model say? Dialogues for five fixed Topik/Konteks pairs, and simple measures.

    python experiments/samples.py               # the chosen default model (see --variant)

Pairs: the first three held-out shipped-corpus entries and the first two held-out XPersona entries (the
90/10 entry split of experiment 1). For each pair: six turns alternating the entry's two speakers, starting
from the header and Konteks only; each reply is sampled (temperature 0.8, top-p 0.95, seed fixed per pair)
until "\\n\\n" (or </s>, or 100 tokens). The conversation is re-rendered in the training layout before each
turn. Writes experiments/results/samples.txt (the chosen model) and the measures for every model of
experiment 1 (the same prompts and seeds), plus the same measures on the real held-out turns for reference.

Measures: distinct-2 (unique word bigrams / all bigrams, over all replies), repetition rate (share of word
4-grams inside a reply that repeat an earlier 4-gram of the same reply), and format: share of turns that are
non-empty, on one line, without a stray "Name:" label inside, and ended by "\\n\\n" (not cut at 100 tokens).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402

TURNS = 6
MAX_NEW_TOKENS = 100
TEMPERATURE, TOP_P = 0.8, 0.95
SEED = 1234
MODELS = ["retention", "linear", "gated", "llama"]
OUT = C.RESULTS / "samples.json"
STRAY = re.compile(r"(?:^|\s)(?:[A-Z][\w'-]{0,39}|Konteks|Topik)(?: [A-Z][\w'-]*)?:(?:\s|$)|====")


def pairs(data):
    return data.corpus_val[:3] + data.xp_val[:2]


def sample_next(logits, generator):
    import torch

    probs = torch.softmax(logits.float() / TEMPERATURE, dim=-1)
    sorted_probs, index = probs.sort(descending=True)
    keep = sorted_probs.cumsum(-1) - sorted_probs < TOP_P  # the smallest set whose mass reaches top_p
    sorted_probs = sorted_probs * keep
    choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
    return int(index[choice])


def generate_reply(model, tok, prompt: str, generator) -> tuple[str, str]:
    """Sample after `prompt` until "\\n\\n"; returns (reply text, how it ended)."""
    import torch

    ids = tok(prompt)["input_ids"]
    ringan_model = C.is_ringan(model)
    with torch.no_grad():
        if ringan_model:
            from ringan import RinganCache

            cache = RinganCache(len(model.model.layers), 1)
            out = model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True)
        else:
            out = model(input_ids=torch.tensor([ids]), use_cache=True)
            cache = out.past_key_values
        new: list[int] = []
        for _ in range(MAX_NEW_TOKENS):
            token = sample_next(out.logits[0, -1], generator)
            if token == tok.eos_token_id:
                return tok.decode(new), "eos"
            new.append(token)
            text = tok.decode(new)
            if "\n\n" in text:
                return text[: text.index("\n\n")], "turn_end"
            x = torch.tensor([[token]])
            if ringan_model:
                out = model(input_ids=x, cache=cache, use_cache=True)
            else:
                out = model(input_ids=x, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
    return tok.decode(new), "max_tokens"


def dialogue(model, tok, entry, seed: int) -> list[dict]:
    import torch

    from ringan.data import Entry, Turn, render_entry

    speakers = entry.speakers[:2] if len(entry.speakers) >= 2 else [entry.speakers[0], "B"]
    generator = torch.Generator().manual_seed(seed)
    turns: list[Turn] = []
    out = []
    for i in range(TURNS):
        speaker = speakers[i % 2]
        header = (
            render_entry(Entry(entry.topic, entry.context, tuple(turns)))
            if turns
            else (f"==== Topik: {entry.topic} ====\n\nKonteks: {entry.context}\n\n")
        )
        raw, ending = generate_reply(model, tok, header + f"{speaker}:", generator)
        text = raw.strip()
        out.append({"speaker": speaker, "raw": raw, "text": text, "ending": ending})
        # keep the conversation in the training layout (a broken reply becomes one line; an empty one "...")
        turns.append(Turn(speaker, " ".join(text.split()) or "..."))
    return out


def words(text: str) -> list[str]:
    return re.findall(r"\w+(?:[-']\w+)*", text.lower())


def measures(replies: list[dict]) -> dict:
    bigrams, unique_bigrams, fourgrams, repeated = 0, set(), 0, 0
    ok = {"non_empty": 0, "one_line": 0, "no_stray_label": 0, "ended_by_turn_end": 0, "all": 0}
    for r in replies:
        w = words(r["text"])
        pairs_ = list(zip(w, w[1:]))
        bigrams += len(pairs_)
        unique_bigrams.update(pairs_)
        grams = list(zip(w, w[1:], w[2:], w[3:]))
        fourgrams += len(grams)
        repeated += len(grams) - len(set(grams))
        checks = {
            "non_empty": bool(r["text"]),
            "one_line": "\n" not in r["text"],
            "no_stray_label": STRAY.search(r["text"]) is None,
            "ended_by_turn_end": r.get("ending", "turn_end") == "turn_end",
        }
        checks["all"] = all(checks.values())
        for k, v in checks.items():
            ok[k] += int(v)
    n = max(len(replies), 1)
    return {
        "replies": len(replies),
        "distinct_2": len(unique_bigrams) / max(bigrams, 1),
        "repetition_rate_4gram": repeated / max(fourgrams, 1),
        "mean_words": sum(len(words(r["text"])) for r in replies) / n,
        **{f"format_{k}": v / n for k, v in ok.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", help="model whose dialogues go to samples.txt (default: the chosen default)")
    args = parser.parse_args()
    C.require_data()
    start = time.time()
    C.setup(0)
    data = C.load_data()
    tok = C.get_tokenizer(data)
    chosen = args.variant or "retention"
    chosen_file = C.RESULTS / "chosen_default.txt"
    if args.variant is None and chosen_file.exists():
        chosen = chosen_file.read_text().strip()
    entries = pairs(data)
    all_results, timing = {}, {}
    for name in MODELS:
        folder = C.WORK / "exp1" / name / "final"
        if not (folder / "config.json").exists():
            raise SystemExit(f"{folder} is missing: run `python experiments/attention_choice.py --stage main` first")
        model = C.load_model(folder).eval()
        t = time.time()
        all_results[name] = [
            {"topic": e.topic, "context": e.context, "turns": dialogue(model, tok, e, SEED + i)}
            for i, e in enumerate(entries)
        ]
        timing[name] = time.time() - t
        C.log(f"{name}: {timing[name]:.1f}s")
    reference = [{"text": t.text, "ending": "turn_end"} for e in data.corpus_val + data.xp_val for t in e.turns]
    table_rows = [
        "| model | replies | distinct-2 | 4-gram repetition | mean words | format ok (all) | non-empty | one line | no stray label | ended by \\n\\n |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    metrics = {}
    for name, dialogues in list(all_results.items()) + [("real held-out turns", None)]:
        replies = reference if dialogues is None else [t for d in dialogues for t in d["turns"]]
        m = measures(replies)
        metrics[name] = m
        mark = " (chosen)" if name == chosen else ""
        table_rows.append(
            f"| {name}{mark} | {m['replies']} | {m['distinct_2']:.3f} | {m['repetition_rate_4gram']:.3f} | {m['mean_words']:.1f} | "
            f"{m['format_all']:.0%} | {m['format_non_empty']:.0%} | {m['format_one_line']:.0%} | "
            f"{m['format_no_stray_label']:.0%} | {m['format_ended_by_turn_end']:.0%} |"
        )
    table = "\n".join(table_rows)
    lines = [
        f"# Samples from the Ringan '{chosen}' model of experiment 1 (prose + dialogue, 0.92M training tokens, ids unknown)",
        f"# temperature {TEMPERATURE}, top_p {TOP_P}, seed {SEED} + pair index, {TURNS} turns, "
        f"each reply cut at the first blank line (max {MAX_NEW_TOKENS} tokens)",
        "# reproduce: python experiments/samples.py",
        "",
    ]
    for d in all_results[chosen]:
        lines += [f"==== Topik: {d['topic']} ====", "", f"Konteks: {d['context']}", ""]
        for t in d["turns"]:
            note = "" if t["ending"] == "turn_end" else f"   [ended by {t['ending']}]"
            lines += [f"{t['speaker']}: {t['raw'].strip()}{note}", ""]
        lines.append("")
    (C.RESULTS / "samples.txt").write_text("\n".join(lines), encoding="utf-8")
    print(table)
    C.write_json(
        OUT,
        {
            "chosen": chosen,
            "metrics": metrics,
            "table": table,
            "dialogues": all_results,
            "timing_seconds": timing,
            "wall_seconds": time.time() - start,
        },
    )
    C.log(f"done in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
