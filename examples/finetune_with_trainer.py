"""Fine-tune a saved Ringan model on your own dialogue file with a plain `transformers.Trainer`.

    python examples/finetune_with_trainer.py runs/quickstart/model my_dialogues.txt --output runs/finetuned

The dialogue file uses the project's format (`==== Topik: ... ====`, `Konteks: ...`, `Name: text` turns);
`ringan.data` parses it with file:line errors. Everything else is stock transformers.
"""

from __future__ import annotations

import argparse

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from ringan.data import read_dialogues, render_entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a saved model folder or a Hub repo id")
    parser.add_argument("data", nargs="+", help="dialogue files")
    parser.add_argument("--output", default="runs/finetuned")
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)  # the config has auto_map
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=True)
    topics = model.config.topic_names or ["<unk>"]
    contexts = model.config.context_names or ["<unk>"]

    rows = []
    for entry in read_dialogues(args.data):
        ids = tokenizer(render_entry(entry))["input_ids"] + [tokenizer.eos_token_id]
        rows.append(
            {
                "input_ids": ids[: args.max_length],
                # known topics keep their id; new ones use 0 (unknown) since the embedding rows are fixed
                "topic_ids": topics.index(entry.topic) if entry.topic in topics else 0,
                "context_ids": contexts.index(entry.context) if entry.context in contexts else 0,
            }
        )

    def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            input_ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, : len(r["input_ids"])] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": input_ids.masked_fill(mask == 0, -100),  # shifted inside the model
            "topic_ids": torch.tensor([r["topic_ids"] for r in batch]),
            "context_ids": torch.tensor([r["context_ids"] for r in batch]),
        }

    training_args = TrainingArguments(
        output_dir=args.output,
        per_device_train_batch_size=4,
        learning_rate=args.learning_rate,
        max_steps=args.max_steps,
        lr_scheduler_type="cosine",
        logging_steps=max(args.max_steps // 10, 1),
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,  # keep topic_ids / context_ids for the collator
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=Dataset.from_list(rows), data_collator=collate)
    trainer.train()
    trainer.save_model(args.output)
    tokenizer.save_pretrained(args.output)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(f"fine-tuned {args.max_steps} steps: loss {losses[0]:.3f} -> {losses[-1]:.3f}; saved to {args.output}")


if __name__ == "__main__":
    main()
