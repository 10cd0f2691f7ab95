"""Does topic/context conditioning help on contexts the model has never seen? (issue: conditioning)

Every arm fine-tunes the same pre-trained checkpoint (the mixer experiment's pre-training phase) on
XPersona-train + corpus-train, one entry per sequence, FINETUNE_EPOCHS, and is scored on held-out entries whose
Konteks (XPersona: every persona is distinct) or Topik (corpus: every entry has its own) never appears in training.

Arms:
- `none`: no conditioning vector (the Konteks is in the token stream, as in the data format);
- `ids`: the founding document's id tables (an unseen Konteks is id 0);
- `text`: vectors from the Topik/Konteks text, the Konteks also in the stream;
- `text-only`: vectors from the text, the Konteks NOT in the stream (a long Konteks costs no tokens);
- `none-only`: no vector and no Konteks in the stream (what the model knows without the Konteks);
- `text-cd0.3`, `text-cooldown`: `text` with conditioning dropout 0.3, or with 0.1 and the last 10% of the steps
  without any conditioning (MeCo's cooldown).

Measures (bits per byte on the speaker turns only, not on the header or the Konteks):
- `heldout`: XPersona / corpus held-out entries, conditioning on vs off (the same model) vs the `none` arm;
- `distance`: the held-out entry's turns placed 0 / 1k / 4k / 16k tokens after its header, the gap filled with
  turns of other entries;
- `control`: for the same opening, a reply generated under its own Konteks and under another one: how often the
  reply shares more content words with its own Konteks (chance 50%).

    python experiments/conditioning.py --checkpoint PATH [--seeds 0 1 2] [--arms ...]
    python experiments/conditioning.py --report
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re

import protocol as P

OUT = P.RESULTS / "conditioning"
FINETUNE_EPOCHS = 2
LEARNING_RATE = 3e-3
DISTANCES = [0, 1024, 4096, 16384]
ARMS = {
    "none": {"conditioning": "none", "context_in_stream": True},
    "ids": {"conditioning": "ids", "context_in_stream": True},
    "text": {"conditioning": "text", "context_in_stream": True},
    "text-only": {"conditioning": "text", "context_in_stream": False},
    "none-only": {"conditioning": "none", "context_in_stream": False},
    # the schedule of conditioning dropout (for the arm that helps)
    "text-cd0.3": {"conditioning": "text", "context_in_stream": True, "cd": 0.3},
    "text-cooldown": {"conditioning": "text", "context_in_stream": True, "cooldown": 0.1},
}
STOPWORDS = set(
    """saya anda aku kamu yang dan itu ini untuk dengan tidak ada apa juga sudah akan bisa suka sangat
    dari dalam pada karena jadi atau tapi tetapi kalau sama saja lagi banyak punya adalah seperti kami kita mereka
    hanya masih belum boleh harus mau ingin pernah sedang biasanya benar bagus baik terima kasih halo hai oh ya
    bagaimana kenapa mengapa kapan dimana siapa berapa sekali semua setiap lebih kurang sekarang nanti tahu""".split()
)


# ------------------------------------------------------------------------------------------------ data


def render(entry, context_in_stream: bool) -> tuple[str, int]:
    """The entry's training text and the character offset where its turns begin."""
    from ringan.data import render_entry

    text = render_entry(entry)
    if not context_in_stream:
        text = text.replace(f"Konteks: {entry.context}\n\n", "", 1)
    start = text.index(f"{entry.turns[0].speaker}: ", text.index("====", 4) + 4)
    return text, start


def entry_example(entry, tok, arm: dict, topics, contexts) -> dict:
    from ringan.training import conditioning_tokens

    text, _ = render(entry, arm["context_in_stream"])
    ids = tok(text)["input_ids"][: P.SEQ_LEN - 1] + [tok.eos_token_id]
    topic_tokens, context_tokens = conditioning_tokens(tok, entry.topic, entry.context)
    return {
        "input_ids": ids,
        "topic_id": topics.id(entry.topic),
        "context_id": contexts.id(entry.context),
        "topic_input_ids": topic_tokens,
        "context_input_ids": context_tokens,
    }


def conditioning_kwargs(model, tok, entry, on: bool, topics=None, contexts=None) -> dict:
    """The forward/generate conditioning inputs for one entry (batch 1), or none."""
    import torch

    from ringan.training import conditioning_tokens

    mode = model.config.conditioning
    if not on or mode == "none":
        return {}
    if mode == "ids":
        return {
            "topic_ids": torch.tensor([topics.id(entry.topic)]),
            "context_ids": torch.tensor([contexts.id(entry.context)]),
        }
    topic_tokens, context_tokens = conditioning_tokens(tok, entry.topic, entry.context)
    return {"topic_input_ids": torch.tensor([topic_tokens]), "context_input_ids": torch.tensor([context_tokens])}


def turns_nll(model, tok, text: str, turns_start: int, kwargs: dict) -> tuple[float, int]:
    """Summed NLL (nats) of the tokens that lie in `text[turns_start:]`, and that span's UTF-8 bytes."""
    import torch

    enc = tok(text, return_offsets_mapping=True)
    ids = enc["input_ids"]
    scored = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if i > 0 and a >= turns_start and b > 0]
    first = scored[0]
    with torch.no_grad():
        window = torch.tensor([ids])
        # logits only from the position that predicts the first scored token on (a 16k-token window stays small)
        logits = model(window, use_cache=False, logits_to_keep=len(ids) - first + 1, **kwargs).logits[0, :-1].float()
        losses = torch.nn.functional.cross_entropy(logits, window[0, first:], reduction="none")
    wanted = set(scored)
    keep = torch.tensor([i in wanted for i in range(first, len(ids))])
    return float(losses[keep].sum()), len(text[turns_start:].encode("utf-8"))


# ---------------------------------------------------------------------------------------------- worker


def conditioning_cooldown(share: float, steps: int):
    """A Trainer callback: the last `share` of the steps train with every topic/context dropped (MeCo's cooldown)."""
    from transformers import TrainerCallback

    class Cooldown(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if model is not None and state.global_step >= (1 - share) * steps:
                model.model.conditioning.dropout = 1.0

    return Cooldown()


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-zA-Z]+", text.lower()) if len(w) >= 4 and w not in STOPWORDS}


def worker(job: dict) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    import ringan  # noqa: F401
    from ringan import RinganConfig, RinganForCausalLM
    from ringan.data import Entry, LabelVocab

    torch.set_num_threads(int(os.environ.get("RINGAN_THREADS", "1")))
    arm = ARMS[job["arm"]]
    splits = P.load_splits()
    tok = P.get_tokenizer(splits)
    pretrained = AutoModelForCausalLM.from_pretrained(job["checkpoint"])
    overrides = dict(
        conditioning=arm["conditioning"], dropout=0.0, conditioning_dropout=arm.get("cd", job.get("cd", 0.1))
    )
    if arm["conditioning"] == "ids":
        overrides.update(num_topics=64, num_contexts=600)
    config = RinganConfig(**{**pretrained.config.to_dict(), **overrides})
    torch.manual_seed(job["seed"])
    model = RinganForCausalLM(config)
    # everything but the conditioning (new in every arm) comes from the pre-trained checkpoint
    weights = {k: v for k, v in pretrained.state_dict().items() if ".conditioning." not in k}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert all("conditioning" in k for k in missing + unexpected), (missing, unexpected)
    train_entries = splits.dialogue_train
    topics = LabelVocab.build([e.topic for e in train_entries], 64, "topics", "unknown")
    contexts = LabelVocab.build([e.context for e in train_entries], 600, "contexts", "unknown")
    examples = [entry_example(e, tok, arm, topics, contexts) for e in train_entries]
    random.Random(job["seed"]).shuffle(examples)
    steps = job.get("max_steps") or math.ceil(FINETUNE_EPOCHS * len(examples) / P.BATCH_SIZE)
    work = P.WORK / "conditioning" / job["name"]
    P.log(f"{job['name']}: {steps} steps, {sum(p.numel() for p in model.parameters()):,} parameters")
    callbacks = [conditioning_cooldown(arm["cooldown"], steps)] if arm.get("cooldown") else []
    history = P.train_phase(
        model, examples, work, steps, LEARNING_RATE, job["seed"], with_conditioning=True, callbacks=callbacks
    )
    model.eval()
    result = {"job": job, "steps": steps, "train": history, "heldout": {}, "distance": {}, "control": {}}

    # held-out speaker turns, conditioning on and off
    for name, entries in (("xpersona", splits.xp_val), ("corpus", splits.corpus_val)):
        for on in (True, False):
            nll = n_bytes = 0.0
            for entry in entries:
                text, start = render(entry, arm["context_in_stream"])
                a, b = turns_nll(model, tok, text, start, conditioning_kwargs(model, tok, entry, on, topics, contexts))
                nll, n_bytes = nll + a, n_bytes + b
            result["heldout"][f"{name}_{'on' if on else 'off'}"] = nll / math.log(2) / n_bytes
    P.log(f"{job['name']}: " + ", ".join(f"{k} {v:.4f}" for k, v in result["heldout"].items()))

    # distance: the entry's turns placed far from its header, the gap filled with other entries' turns
    entries = splits.xp_val[: job.get("distance_entries", 12)]
    fillers = [t for e in splits.xp_val[12:] for t in e.turns]
    filler_tokens = [
        len(ids) for ids in tok([f"{t.speaker}: {t.text}\n\n" for t in fillers], add_special_tokens=False)["input_ids"]
    ]
    for distance in DISTANCES:
        for on in (True, False):
            nll = n_bytes = 0.0
            for i, entry in enumerate(entries):
                text, start = render(entry, arm["context_in_stream"])
                header, own = text[:start], text[start:]
                gap, k, gap_tokens = "", i * 7, 0
                while gap_tokens < distance:  # whole turns of other entries until the gap holds `distance` tokens
                    turn = fillers[k % len(fillers)]
                    piece = f"{turn.speaker}: {turn.text}\n\n"
                    gap, gap_tokens, k = gap + piece, gap_tokens + filler_tokens[k % len(fillers)], k + 1
                full = header + gap + own
                a, b = turns_nll(
                    model,
                    tok,
                    full,
                    len(header) + len(gap),
                    conditioning_kwargs(model, tok, entry, on, topics, contexts),
                )
                nll, n_bytes = nll + a, n_bytes + b
            result["distance"][f"{distance}_{'on' if on else 'off'}"] = nll / math.log(2) / n_bytes
    P.log(f"{job['name']}: distance " + ", ".join(f"{k} {v:.4f}" for k, v in result["distance"].items()))

    # control: the same opening under its own Konteks and under another one
    follows, trials, samples = 0.0, 0, []
    pool = splits.xp_val[: job.get("control_entries", len(splits.xp_val))]
    for i, entry in enumerate(pool):
        other = pool[(i + 1) % len(pool)]
        for konteks_entry, rival in ((entry, other), (other, entry)):
            shown = Entry(entry.topic, konteks_entry.context, entry.turns[:1])
            text, _ = render(shown, arm["context_in_stream"])
            prompt = text + f"{entry.turns[1].speaker}:"
            ids = tok(prompt, return_tensors="pt")
            with torch.no_grad():
                out = model.generate(
                    **ids,
                    **conditioning_kwargs(model, tok, shown, True, topics, contexts),
                    max_new_tokens=40,
                    do_sample=False,
                    repetition_penalty=1.1,
                    eos_token_id=[tok.eos_token_id] + tok.convert_tokens_to_ids(["Ċ", "ĊĊ"]),
                    pad_token_id=tok.pad_token_id,
                )
            reply = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).split("\n")[0].strip()
            own_overlap = len(content_words(reply) & content_words(konteks_entry.context))
            rival_overlap = len(content_words(reply) & content_words(rival.context))
            follows += 1.0 if own_overlap > rival_overlap else 0.5 if own_overlap == rival_overlap else 0.0
            trials += 1
            if len(samples) < 6:
                samples.append({"konteks": konteks_entry.context, "opening": entry.turns[0].text, "reply": reply})
    result["control"] = {"follows_own": follows / trials, "trials": trials, "samples": samples}
    P.log(f"{job['name']}: control {follows / trials:.3f} over {trials} replies")
    P.write_json(OUT / f"{job['name']}.json", result)


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="the pre-trained checkpoint every arm fine-tunes")
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cd", type=float, default=0.1, help="conditioning dropout")
    parser.add_argument("--tag", default="", help="suffix of the run names")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    P.require_data()
    if args.checkpoint:
        from jobs import run_jobs

        jobs = [
            {"name": f"{arm}{args.tag}_s{seed}", "arm": arm, "seed": seed, "checkpoint": args.checkpoint, "cd": args.cd}
            for seed in args.seeds
            for arm in args.arms
        ]
        todo = [j for j in jobs if not (OUT / f"{j['name']}.json").exists()]
        P.log(f"{len(todo)} of {len(jobs)} runs to do")
        run_jobs(__file__, todo, P.WORK / "logs" / "conditioning", parallel=args.parallel)
    if args.report:
        from conditioning_report import report

        report(OUT)


if __name__ == "__main__":
    main()
