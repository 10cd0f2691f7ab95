"""Fine-tune a saved Ringan model on your own dialogue file with a plain `transformers.Trainer`.

    python examples/finetune_with_trainer.py runs/quickstart/model my_dialogues.txt --output runs/finetuned

The dialogue file uses the project's format (`==== Topik: ... ====`, `Konteks: ...`, `Name: text` turns);
`ringan.data` parses it with file:line errors, and `ringan.training` turns each entry into the model's inputs (its
tokens, and the Topik/Konteks in the form the model's `config.conditioning` takes). Everything else is stock
transformers.
"""

from __future__ import annotations

import argparse

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from ringan.data import LabelVocab, read_dialogues
from ringan.training import DialogueCollator, entry_to_examples


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
    # known topics keep their id (conditioning="ids"); new ones use 0 (unknown) since the embedding rows are fixed
    topics = LabelVocab(model.config.topic_names or ["<unk>"])
    contexts = LabelVocab(model.config.context_names or ["<unk>"])
    rows = [
        x for e in read_dialogues(args.data) for x in entry_to_examples(e, tokenizer, topics, contexts, args.max_length)
    ]
    keep = ("input_ids", "topic_id", "context_id", "topic_input_ids", "context_input_ids")
    rows = [{k: r[k] for k in keep} for r in rows]
    # pads, builds the labels (-100 on padding; shifted inside the model) and the conditioning inputs
    collate = DialogueCollator(tokenizer.pad_token_id, model.config.conditioning)

    training_args = TrainingArguments(
        output_dir=args.output,
        per_device_train_batch_size=4,
        learning_rate=args.learning_rate,
        max_steps=args.max_steps,
        lr_scheduler_type="cosine",
        logging_steps=max(args.max_steps // 10, 1),
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,  # keep the Topik/Konteks columns for the collator
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=Dataset.from_list(rows), data_collator=collate)
    trainer.train()
    trainer.save_model(args.output)
    tokenizer.save_pretrained(args.output)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(f"fine-tuned {args.max_steps} steps: loss {losses[0]:.3f} -> {losses[-1]:.3f}; saved to {args.output}")


if __name__ == "__main__":
    main()
