"""The measurement protocol of the quality experiments, fixed once: data sources and their held-out parts, the
one tokenizer, model builders (Ringan variants and the same-size Llama), a training phase on the package's own
Trainer arguments (`ringan.training.training_arguments`) and the package's exact evaluator.

Data (`../shared/data`, read in place; `require_data()` exits 0 with a message when it is absent):
- text: `prose-id.txt` and every `pretrain/*.txt` except the dialogue file; the last 2% of each file's characters
  is held out (`ringan.data.split_text`), so every source is represented in the held-out prose.
- dialogues: `pretrain/dlg_indosmd.txt` (task dialogues, pre-training), XPersona-valid and the bundled corpus
  (fine-tuning); each split by entry, 10%, seed 0 (`ringan.data.split_entries`).

Checkpoints and caches go to `RINGAN_EXP_DIR` (default `/tmp/ringan-exp`), never into the repository.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RINGAN_DATA", REPO.parent / "shared" / "data"))
WORK = Path(os.environ.get("RINGAN_EXP_DIR", "/tmp/ringan-exp"))
RESULTS = Path(os.environ.get("RINGAN_RESULTS_DIR", REPO / "experiments" / "results"))  # where the JSONs go

SEQ_LEN = 1024
VOCAB_SIZE = 10000
TEXT_HELDOUT_FRACTION = 0.02
DIALOGUE_HELDOUT_FRACTION = 0.1
DATA_SEED = 0
BATCH_SIZE = 4  # sequences of SEQ_LEN per optimizer step (4096 tokens)


def require_data() -> None:
    """Exit 0 with a message when the shared data is not there (a fresh checkout does not have it)."""
    needed = [DATA / "prose-id.txt", DATA / "xpersona-id-valid.txt", DATA / "pretrain"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        print(f"skipping: the shared data is not available ({', '.join(missing)} missing)")
        sys.exit(0)


def log(*args) -> None:
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def text_files() -> list[Path]:
    return [DATA / "prose-id.txt"] + sorted(
        p for p in (DATA / "pretrain").glob("*.txt") if not p.name.startswith("dlg_")
    )


def dialogue_pretrain_files() -> list[Path]:
    return sorted((DATA / "pretrain").glob("dlg_*.txt"))


# ------------------------------------------------------------------------------------------------ data


@dataclass
class Splits:
    text_train: list[str]
    text_heldout: dict[str, list[str]]  # per source file
    smd_train: list
    smd_val: list
    xp_train: list
    xp_val: list
    corpus_train: list
    corpus_val: list

    @property
    def dialogue_train(self) -> list:
        """The fine-tuning dialogues (XPersona train + bundled corpus train)."""
        return self.xp_train + self.corpus_train


def load_splits() -> Splits:
    from ringan.data import load_default_corpus, read_dialogues, split_entries, split_text

    text_train, text_heldout = [], {}
    for path in text_files():
        train, held = split_text(path.read_text(encoding="utf-8").splitlines(), TEXT_HELDOUT_FRACTION)
        text_train += train
        text_heldout[path.name] = held
    smd = read_dialogues(dialogue_pretrain_files())
    smd_train, smd_val = split_entries(smd, DIALOGUE_HELDOUT_FRACTION, seed=DATA_SEED)
    xp_train, xp_val = split_entries(
        read_dialogues(DATA / "xpersona-id-valid.txt"), DIALOGUE_HELDOUT_FRACTION, DATA_SEED
    )
    corpus_train, corpus_val = split_entries(load_default_corpus(), DIALOGUE_HELDOUT_FRACTION, DATA_SEED)
    return Splits(text_train, text_heldout, smd_train, smd_val, xp_train, xp_val, corpus_train, corpus_val)


def get_tokenizer(splits: Splits):
    """Byte-level BPE (vocab 10000) trained once on every training part; cached under WORK."""
    from transformers import AutoTokenizer

    from ringan.tokenization import train_tokenizer

    folder = WORK / "tokenizer"
    if not (folder / "tokenizer.json").exists():
        entries = splits.smd_train + splits.xp_train + splits.corpus_train
        tok = train_tokenizer(entries, vocab_size=VOCAB_SIZE, extra_texts=splits.text_train)
        tmp = folder.with_name("tokenizer.tmp")
        tok.save_pretrained(str(tmp))
        os.replace(tmp, folder)
    return AutoTokenizer.from_pretrained(str(folder))


def cached(name: str, build):
    path = WORK / "cache" / f"{name}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(value, str(path) + ".tmp")
    os.replace(str(path) + ".tmp", path)
    return value


def entry_examples(entries, tok, topics=None, contexts=None, max_length: int = SEQ_LEN) -> list[dict]:
    """One sequence per entry (windows if longer); topic/context ids 0 unless vocabularies are given."""
    from ringan.data import LabelVocab
    from ringan.training import entry_to_examples

    topics, contexts = topics or LabelVocab([]), contexts or LabelVocab([])
    return [x for e in entries for x in entry_to_examples(e, tok, topics, contexts, max_length)]


def packed(examples: list[dict], seed: int = DATA_SEED) -> list[dict]:
    """Shuffle (seeded) then pack into blocks of at most SEQ_LEN tokens."""
    import random

    from ringan.training import pack_examples

    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return pack_examples([examples[i] for i in order], SEQ_LEN)


def pretrain_blocks(splits: Splits, tok) -> list[dict]:
    """Text windows + IndoSMD dialogues packed, all with ids 0 (cached)."""
    from ringan.training import text_to_examples

    def build():
        blocks = text_to_examples(splits.text_train, tok, SEQ_LEN)
        return blocks + packed(entry_examples(splits.smd_train, tok))

    return cached("pretrain_blocks", build)


def heldout_sets(splits: Splits, tok) -> dict[str, list[dict]]:
    """The evaluation sequences: held-out prose (all sources), XPersona and bundled-corpus held-out entries."""
    from ringan.training import text_to_examples

    def build():
        prose = [x for lines in splits.text_heldout.values() for x in text_to_examples(lines, tok, SEQ_LEN)]
        return {
            "prose": prose,
            "xpersona": entry_examples(splits.xp_val, tok),
            "corpus": entry_examples(splits.corpus_val, tok),
        }

    return cached("heldout", build)


# ---------------------------------------------------------------------------------------------- models


def build_model(spec: dict, vocab_size: int, seed: int):
    """`spec`: `{"kind": "llama"}` or `{"kind": "ringan", **RinganConfig overrides}`. Dropout 0 everywhere: every
    model sees its data about once, and Llama has no residual/embedding dropout."""
    torch.manual_seed(seed)
    spec = dict(spec)
    kind = spec.pop("kind")
    if kind == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=256,
            intermediate_size=1024,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=SEQ_LEN,
            tie_word_embeddings=False,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            attention_dropout=0.0,
        )
        config._attn_implementation = "sdpa"
        return LlamaForCausalLM(config)
    from ringan import RinganConfig, RinganForCausalLM

    values = dict(vocab_size=vocab_size, dropout=0.0, conditioning_dropout=0.0)
    values.update(spec)
    return RinganForCausalLM(RinganConfig(**values))


def is_ringan(model) -> bool:
    return getattr(model.config, "model_type", "") == "ringan"


def collator(model, with_conditioning: bool):
    """`ringan.training.DialogueCollator` carrying the conditioning the model takes (none for Llama, or when
    `with_conditioning` is off)."""
    from ringan.training import DialogueCollator

    mode = model.config.conditioning if is_ringan(model) and with_conditioning else "none"
    return DialogueCollator(0, mode)


def train_phase(
    model,
    blocks: list[dict],
    out_dir: Path,
    steps: int,
    lr: float,
    seed: int,
    with_conditioning: bool = False,
    save_steps: int | None = None,
    callbacks: list | None = None,
) -> dict:
    """One training phase on the package's Trainer arguments (warm-up 5%, cosine to 0), resumable from its
    checkpoints. Returns the loss history and timing."""
    import datasets
    from transformers import Trainer

    from ringan.training import complete_checkpoints, training_arguments

    args = training_arguments(
        out_dir,
        batch_size=BATCH_SIZE,
        learning_rate=lr,
        max_steps=steps,
        warmup_steps=max(1, int(0.05 * steps)),
        seed=seed,
        logging_steps=10,
        save_steps=save_steps or max(steps // 4, 50),
        save_total_limit=1,
    )
    args.disable_tqdm = True
    keys = ("input_ids", "topic_id", "context_id", "topic_input_ids", "context_input_ids")
    if with_conditioning:
        rows = [{k: b[k] for k in keys if k in b} for b in blocks]
    else:
        rows = [{"input_ids": b["input_ids"]} for b in blocks]
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        data_collator=collator(model, with_conditioning),
        callbacks=callbacks,
    )
    found = complete_checkpoints(out_dir)
    start = time.time()
    trainer.train(resume_from_checkpoint=str(found[-1]) if found else None)
    history = [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
    return {"history": history, "seconds": time.time() - start, "tokens": trainer.state.num_input_tokens_seen}


def evaluate(model, examples: list[dict], batch_size: int = 8) -> dict:
    """The project's exact evaluator (token-weighted loss, perplexity, bits per byte)."""
    from ringan.training import evaluate_examples

    target = model if is_ringan(model) else _NoIds(model)
    return evaluate_examples(target, examples, batch_size=batch_size)


class _NoIds(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, topic_ids=None, context_ids=None, use_cache=None, **kw):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False))
    os.replace(tmp, path)
