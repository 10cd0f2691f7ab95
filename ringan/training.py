"""What training and evaluation run on: model inputs, the TrainingArguments, exact metrics, checkpoint folders.

Model inputs from dialogue entries (windows, packing, a collator that carries topic/context ids), the
`TrainingArguments` of every run, exact perplexity and bits per byte (overall and per speaker), and checkpoint
folders that are never half-written. The `Trainer` subclass that uses them is in `ringan.trainer`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from .data import UNKNOWN, Entry, LabelVocab, render_dialogue, render_entry
from .files import save_atomically  # noqa: F401  (its old place: callers import it from here)
from .runs import CHECKPOINT_PREFIX, complete_checkpoints  # noqa: F401  (their old place)
from .tokenization import encode_text

# ------------------------------------------------------------------------------------------ sequences


def window_starts(length: int, max_length: int) -> range:
    """Where the windows of a `length`-token sequence start: windows of `max_length` overlap by one token, so
    every token but the first is predicted exactly once."""
    return range(0, max(length - 1, 1), max_length - 1)


def _windows(ids: list[int], max_length: int) -> list[list[int]]:
    return [ids[start : start + max_length] for start in window_starts(len(ids), max_length)]


def entry_to_examples(
    entry: Entry, tokenizer: PreTrainedTokenizerBase, topics: LabelVocab, contexts: LabelVocab, max_length: int
) -> list[dict]:
    """`<s>` + the entry's text + `</s>`, cut into windows of `max_length` tokens (nothing is dropped). Each
    window carries its entry's topic/context ids and the tokens of its Topik and Konteks (for either form of
    conditioning)."""
    text = render_entry(entry)
    ids = encode_text(tokenizer, text)["input_ids"] + [tokenizer.eos_token_id]
    examples = _examples(ids, len(text.encode("utf-8")), topics.id(entry.topic), contexts.id(entry.context), max_length)
    topic_tokens, context_tokens = conditioning_tokens(tokenizer, entry.topic, entry.context)
    for example in examples:
        example["topic_input_ids"], example["context_input_ids"] = topic_tokens, context_tokens
    return examples


def conditioning_tokens(
    tokenizer: PreTrainedTokenizerBase, topic: str | None, context: str | None
) -> tuple[list, list]:
    """The token ids of a Topik title and a Konteks paragraph, as `conditioning="text"` models take them
    (`topic_input_ids`, `context_input_ids`; no special tokens; `None` or "" = none)."""
    encode = lambda text: encode_text(tokenizer, text, add_special_tokens=False)["input_ids"] if text else []  # noqa: E731
    return encode(topic), encode(context)


def _examples(ids: list[int], n_bytes: int, topic_id: int, context_id: int, max_length: int) -> list[dict]:
    windows = _windows(ids, max_length)
    predicted = max(len(ids) - 1, 1)
    # bytes are shared out in proportion to the predicted tokens, so sums over windows stay exact
    return [
        {
            "input_ids": w,
            "topic_id": topic_id,
            "context_id": context_id,
            "topic_input_ids": [],
            "context_input_ids": [],
            "n_bytes": n_bytes * (len(w) - 1) / predicted,
        }
        for w in windows
    ]


def text_to_examples(lines: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_length: int) -> list[dict]:
    """Plain text (e.g. prose for pre-training): one paragraph per line, packed into windows; ids 0 (unknown)."""
    texts = [line.strip() + "\n\n" for line in lines if line.strip()]
    if not texts:
        return []
    ids: list[int] = []
    for encoded in encode_text(tokenizer, texts)["input_ids"]:  # one batched call: fast on large files
        ids += encoded + [tokenizer.eos_token_id]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return _examples(ids, n_bytes, 0, 0, max_length)


def pack_examples(examples: Sequence[dict], max_length: int) -> list[dict]:
    """Concatenate sequences into blocks of `max_length` with per-token topic/context ids (the id form of
    conditioning; a packed block carries no Topik/Konteks text)."""
    packed, ids, topics, contexts, n_bytes = [], [], [], [], 0.0

    def close() -> None:
        block = {"input_ids": ids, "topic_id": topics, "context_id": contexts, "n_bytes": n_bytes}
        packed.append({**block, "topic_input_ids": [], "context_input_ids": []})

    for ex in examples:
        n = len(ex["input_ids"])
        if ids and len(ids) + n > max_length:
            close()
            ids, topics, contexts, n_bytes = [], [], [], 0.0
        ids = ids + ex["input_ids"]
        topics = topics + [ex["topic_id"]] * n
        contexts = contexts + [ex["context_id"]] * n
        n_bytes += ex["n_bytes"]
    if ids:
        close()
    return packed


@dataclass
class DialogueCollator:
    """Pads on the right, builds labels (`-100` on padding) and carries the conditioning the model takes:
    `conditioning="ids"`: `topic_ids` / `context_ids` (`[B]` per sequence, or `[B, T]` per token for packed
    examples); `"text"`: `topic_input_ids` / `context_input_ids` with their attention masks (rows without text
    are all padding = no conditioning); `"none"`: nothing."""

    pad_token_id: int = 0
    conditioning: str = "ids"

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        batch = len(features)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[i, :n] = torch.tensor(f["input_ids"])
            attention_mask[i, :n] = 1
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if self.conditioning == "ids":
            out.update(self._ids(features, width))
        elif self.conditioning == "text":
            for name in ("topic", "context"):
                out.update(self._text(features, name))
        return out

    @staticmethod
    def _ids(features: list[dict], width: int) -> dict[str, torch.Tensor]:
        per_token = isinstance(features[0]["topic_id"], list)
        shape = (len(features), width) if per_token else (len(features),)
        topic_ids = torch.zeros(shape, dtype=torch.long)
        context_ids = torch.zeros(shape, dtype=torch.long)
        for i, f in enumerate(features):
            if per_token:
                n = len(f["input_ids"])
                topic_ids[i, :n] = torch.tensor(f["topic_id"])
                context_ids[i, :n] = torch.tensor(f["context_id"])
            else:
                topic_ids[i], context_ids[i] = f["topic_id"], f["context_id"]
        return {"topic_ids": topic_ids, "context_ids": context_ids}

    def _text(self, features: list[dict], name: str) -> dict[str, torch.Tensor]:
        rows = [f.get(f"{name}_input_ids") or [] for f in features]
        width = max(len(r) for r in rows)
        if width == 0:
            return {}
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return {f"{name}_input_ids": ids, f"{name}_attention_mask": mask}


def training_arguments(
    output_dir: str | Path,
    *,
    batch_size: int,
    learning_rate: float,
    max_steps: int = -1,
    epochs: float = 1.0,
    grad_accum: int = 1,
    warmup_steps: int = 0,
    weight_decay: float = 0.01,
    seed: int = 42,
    bf16: bool = False,
    logging_steps: int = 10,
    save_steps: int = 50,
    save_total_limit: int = 2,
    eval_steps: int | None = None,
    tensorboard: bool = False,
):
    """The `TrainingArguments` of every Ringan training run (`ringan train`, the experiments): AdamW with
    beta2 0.98, gradient clipping at 1.0, linear warm-up then cosine decay, exact data-order seeding."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        adam_beta2=0.98,
        max_grad_norm=1.0,
        num_train_epochs=epochs,
        max_steps=max_steps,
        lr_scheduler_type="cosine",
        warmup_steps=warmup_steps,
        logging_steps=logging_steps,
        eval_strategy="steps" if eval_steps else "no",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=save_total_limit,
        seed=seed,
        data_seed=seed,
        bf16=bf16,
        report_to=["tensorboard"] if tensorboard else [],
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
    )


# ------------------------------------------------------------------------------------------ evaluation


def _progress(total: int, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="seq", file=sys.stderr, disable=not show, leave=False, mininterval=1.0)


def _token_losses(model, collate: DialogueCollator, chunk: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """`(nll per predicted token [B, T-1], targets [B, T-1])` of a batch of examples; padding has target -100."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in collate(chunk).items()}
    targets = batch.pop("labels")[:, 1:]
    logits = model(**batch, use_cache=False).logits[:, :-1].float()
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return losses, targets


@torch.no_grad()
def evaluate_examples(
    model, examples: Sequence[dict], batch_size: int = 8, pad_token_id: int = 0, progress: bool = False
) -> dict[str, float]:
    """Exact token-weighted loss, perplexity and bits per byte (nats summed over every predicted token);
    `progress`: a progress bar on stderr."""
    was_training = model.training
    model.eval()
    collate = DialogueCollator(pad_token_id, getattr(getattr(model, "config", None), "conditioning", "none"))
    total_nll, total_tokens, total_bytes = 0.0, 0, 0.0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))  # less padding
    with _progress(len(order), "eval", progress) as bar:
        for start in range(0, len(order), batch_size):
            chunk = [examples[i] for i in order[start : start + batch_size]]
            losses, targets = _token_losses(model, collate, chunk)
            total_nll += losses.sum().item()
            total_tokens += int((targets != -100).sum())
            total_bytes += sum(e["n_bytes"] for e in chunk)
            bar.update(len(chunk))
    model.train(was_training)
    return nll_metrics(total_nll, total_tokens, total_bytes)


def nll_metrics(nll: float, tokens: int, n_bytes: float) -> dict[str, float]:
    """Loss, perplexity and bits per byte from `nll` nats summed over `tokens` predicted tokens of `n_bytes`."""
    loss = nll / max(tokens, 1)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "bits_per_byte": nll / math.log(2) / max(n_bytes, 1e-9),
        "tokens": tokens,
    }


def model_vocabularies(config) -> tuple[LabelVocab, LabelVocab]:
    """The topic and Konteks ids a saved model was trained with (`config.topic_names`, `config.context_names`)."""
    return LabelVocab(config.topic_names or [UNKNOWN]), LabelVocab(config.context_names or [UNKNOWN])


@torch.no_grad()
def evaluate_by_speaker(
    model, tokenizer, entries: Sequence[Entry], max_length: int = 1024, progress: bool = False
) -> dict[str, dict]:
    """Token-level loss on each entry, attributed to the speaker whose turn holds the token (the Topik and
    Konteks lines are `"(Topik/Konteks)"`): `{speaker: {"tokens", "loss", "perplexity", "bits_per_byte"}}`,
    the most tokens first. The model reads exactly `entry_to_examples`' windows with the collator's inputs, so
    the token counts and summed losses add up to `evaluate_examples`'."""
    topics, contexts = model_vocabularies(model.config)
    collate = DialogueCollator(tokenizer.pad_token_id, getattr(model.config, "conditioning", "none"))
    was_training = model.training
    model.eval()
    nll: dict[str, float] = {}
    tokens: dict[str, int] = {}
    n_bytes: dict[str, int] = {}
    with _progress(len(entries), "eval per speaker", progress) as bar:
        for entry in entries:
            text = render_entry(entry)
            encoded = encode_text(tokenizer, text, return_offsets_mapping=True)
            ids = encoded["input_ids"] + [tokenizer.eos_token_id]
            starts = [start for start, _ in encoded["offset_mapping"]] + [len(text)]
            # who owns each character: the header, then each turn's speaker
            header = len(render_dialogue(entry.topic, entry.context))
            spans = [("(Topik/Konteks)", 0, header)]
            for turn in entry.turns:
                begin = spans[-1][2]
                spans.append((turn.speaker, begin, begin + len(render_dialogue(None, None, [turn]))))
            owners = [next((s for s, a, b in spans if a <= start < b), spans[-1][0]) for start in starts]
            for name, a, b in spans:
                n_bytes[name] = n_bytes.get(name, 0) + len(text[a:b].encode("utf-8"))
            examples = entry_to_examples(entry, tokenizer, topics, contexts, max_length)
            for begin, example in zip(window_starts(len(ids), max_length), examples, strict=True):
                losses, _ = _token_losses(model, collate, [example])
                for offset, value in enumerate(losses[0].tolist()):
                    owner = owners[begin + offset + 1]
                    nll[owner] = nll.get(owner, 0.0) + value
                    tokens[owner] = tokens.get(owner, 0) + 1
            bar.update(1)
    model.train(was_training)
    return {
        name: {"tokens": tokens[name], **nll_metrics(nll[name], tokens[name], n_bytes.get(name, 1))}
        for name in sorted(tokens, key=lambda n: -tokens[n])
    }
