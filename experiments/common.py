"""Shared pieces of the Ringan experiments: data splits, the one tokenizer, model builders, a plain AdamW
training loop (linear warm-up + cosine decay) and evaluation helpers.

Every script reads the public data in `../shared/data` (relative to the repository root) and exits 0 with a
message when it is absent. Checkpoints and caches go to `/tmp/ringan-exp` (override: `RINGAN_EXP_DIR`),
never into the repository.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RINGAN_DATA", REPO.parent / "shared" / "data"))
WORK = Path(os.environ.get("RINGAN_EXP_DIR", "/tmp/ringan-exp"))
RESULTS = REPO / "experiments" / "results"

SEQ_LEN = 1024
VOCAB_SIZE = 10000
PROSE_HELDOUT_FRACTION = 0.15  # of the prose characters, taken from the end of the file
DATA_SEED = 0


def require_data() -> None:
    """Exit 0 with a message when the shared data is not there (a fresh checkout does not have it)."""
    needed = [DATA / "prose-id.txt", DATA / "xpersona-id-valid.txt"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        print(f"skipping: the shared data is not available ({', '.join(missing)} missing)")
        sys.exit(0)


def setup(seed: int = 0) -> None:
    torch.set_num_threads(int(os.environ.get("RINGAN_THREADS", "1")))
    set_seed(seed)


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def log(*args) -> None:
    print(time.strftime("%H:%M:%S"), *args, flush=True)


# ------------------------------------------------------------------------------------------------ data


@dataclass
class Data:
    prose_train: list[str]
    prose_heldout: list[str]
    xp_train: list
    xp_val: list
    corpus_train: list
    corpus_val: list


def load_data() -> Data:
    from ringan.data import load_default_corpus, read_dialogues, split_entries

    lines = [ln.strip() for ln in (DATA / "prose-id.txt").read_text(encoding="utf-8").split("\n")]
    lines = [ln for ln in lines if ln]
    # The file is ordered by source (long Wikipedia paragraphs first, one-line Tatoeba sentences last), so the
    # last 15% of *lines* would hold only ~2% of the text. Hold out the last 15% of the *characters* instead.
    total = sum(len(ln) for ln in lines)
    cut, running = len(lines), 0
    while cut > 0 and running < PROSE_HELDOUT_FRACTION * total:
        cut -= 1
        running += len(lines[cut])
    xp_train, xp_val = split_entries(read_dialogues(DATA / "xpersona-id-valid.txt"), 0.1, seed=DATA_SEED)
    corpus_train, corpus_val = split_entries(load_default_corpus(), 0.1, seed=DATA_SEED)
    return Data(lines[:cut], lines[cut:], xp_train, xp_val, corpus_train, corpus_val)


def get_tokenizer(data: Data):
    """Byte-level BPE (vocab 10000) trained once on the training parts of all data; cached under WORK."""
    from transformers import PreTrainedTokenizerFast

    from ringan.tokenization import save_tokenizer, train_tokenizer

    folder = WORK / "tokenizer"
    if (folder / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(str(folder))
    tok = train_tokenizer(data.xp_train + data.corpus_train, vocab_size=VOCAB_SIZE, extra_texts=data.prose_train)
    folder.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tok, folder)
    return PreTrainedTokenizerFast.from_pretrained(str(folder))


def dialogue_examples(entries, tok, topics=None, contexts=None, max_length: int = SEQ_LEN) -> list[dict]:
    """One example per entry (windows if longer than max_length); ids 0 unless vocabularies are given."""
    from ringan.data import LabelVocab
    from ringan.training import entry_to_examples

    topics = topics or LabelVocab([])
    contexts = contexts or LabelVocab([])
    out = []
    for e in entries:
        out += entry_to_examples(e, tok, topics, contexts, max_length)
    return out


def pack(examples: list[dict], seed: int, max_length: int = SEQ_LEN) -> list[dict]:
    """Shuffle (seeded) then pack into blocks of at most max_length tokens with per-token ids."""
    from ringan.training import pack_examples

    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return pack_examples([examples[i] for i in order], max_length)


# ---------------------------------------------------------------------------------------------- models


def ringan_config(vocab_size: int, attention_type: str = "retention", **overrides):
    from ringan import RinganConfig

    # Dropout 0: every model sees its data about once, and the Llama baseline has no residual/embedding dropout.
    kw = dict(vocab_size=vocab_size, attention_type=attention_type, dropout=0.0, conditioning_dropout=0.0)
    kw.update(overrides)
    return RinganConfig(**kw)


def build_model(name: str, vocab_size: int, **overrides):
    """`name` is a Ringan attention type or "llama" (same vocab/width/depth/heads/FFN, untied head)."""
    if name == "llama":
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
    from ringan import RinganForCausalLM

    return RinganForCausalLM(ringan_config(vocab_size, name, **overrides))


def is_ringan(model) -> bool:
    return getattr(model.config, "model_type", "") == "ringan"


def load_model(folder: Path):
    from transformers import AutoModelForCausalLM

    import ringan  # noqa: F401  (registers the Auto classes)

    return AutoModelForCausalLM.from_pretrained(str(folder))


class NoIds(torch.nn.Module):
    """Lets a model without topic/context inputs (Llama) go through `ringan.training.evaluate_examples`."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None, topic_ids=None, context_ids=None, use_cache=None, **kw):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------- training


def collate(blocks: list[dict], with_ids: bool) -> dict[str, torch.Tensor]:
    from ringan.training import DialogueCollator

    batch = DialogueCollator(0)(blocks)
    if not with_ids:
        batch.pop("topic_ids")
        batch.pop("context_ids")
    return batch


def make_optimizer(model, lr: float, weight_decay: float = 0.1):
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if p.requires_grad and not (p.dim() >= 2 and "embed" not in n)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def lr_at(step: int, total: int, peak: float, warmup: int, final_fraction: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return peak * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    model,
    epoch_blocks,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    with_ids: bool,
    warmup_fraction: float = 0.05,
    log_every: int = 20,
    label: str = "",
) -> dict:
    """Plain AdamW loop. `epoch_blocks(epoch)` returns that epoch's packed blocks (each a dict as
    `pack_examples` makes). Returns a log with per-step loss, tokens and wall time."""
    set_seed(seed)
    model.train()
    opt = make_optimizer(model, lr)
    warmup = max(1, int(warmup_fraction * steps))
    history, tokens, start = [], 0, time.time()
    epoch, blocks, cursor = 0, epoch_blocks(0), 0
    ringan_model = is_ringan(model)
    for step in range(steps):
        batch_blocks = []
        while len(batch_blocks) < batch_size:
            if cursor >= len(blocks):
                epoch, cursor = epoch + 1, 0
                blocks = epoch_blocks(epoch)
            batch_blocks.append(blocks[cursor])
            cursor += 1
        batch = collate(batch_blocks, with_ids and ringan_model)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        if not ringan_model:
            batch.pop("topic_ids", None)
            batch.pop("context_ids", None)
        out = model(**batch, use_cache=False)
        loss = out.loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{label}: non-finite loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        opt.step()
        tokens += int(batch["attention_mask"].sum())
        history.append({"step": step, "loss": loss.item(), "grad_norm": grad_norm, "tokens": tokens})
        if log_every and (step % log_every == 0 or step == steps - 1):
            elapsed = time.time() - start
            log(
                f"{label} step {step + 1}/{steps} loss {float(loss):.4f} gn {grad_norm:.2f} "
                f"{tokens / max(elapsed, 1e-9):.0f} tok/s epoch {epoch}"
            )
    elapsed = time.time() - start
    model.eval()
    return {
        "history": history,
        "tokens": tokens,
        "seconds": elapsed,
        "tokens_per_second": tokens / elapsed,
        "epochs": epoch + cursor / max(len(blocks), 1),
    }


def evaluate(model, examples, batch_size: int = 8) -> dict:
    """The project's exact evaluator (token-weighted loss, perplexity, bits per byte)."""
    from ringan.training import evaluate_examples

    target = model if is_ringan(model) else NoIds(model)
    return evaluate_examples(target, examples, batch_size=batch_size)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False))
    os.replace(tmp, path)
