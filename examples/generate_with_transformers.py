"""Load a saved Ringan model with plain transformers code (no `ringan` import) and continue a dialogue.

    python examples/generate_with_transformers.py runs/quickstart/model --topic "Kehendak Bebas: ..." \
        --context "Ayu dan Reza ..." --turn "Ayu: Rez, aku lagi bingung." --speaker Reza
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a saved model folder or a Hub repo id")
    parser.add_argument("--topic", default=None, help="a topic name from config.topic_names (default: the first)")
    parser.add_argument("--context", default="Dua teman mengobrol santai.", help="the Konteks paragraph")
    parser.add_argument("--turn", action="append", default=[], help="an opening turn 'Name: text' (repeatable)")
    parser.add_argument("--speaker", default="Caecillia", help="who replies")
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)  # the config has auto_map
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=True).eval()
    topics = model.config.topic_names or ["<unk>"]
    topic = args.topic or (topics[1] if len(topics) > 1 else "Obrolan")
    contexts = model.config.context_names or ["<unk>"]

    # the chat template renders the training layout: Topik header, Konteks (system), "Name: text" turns
    messages = [{"role": "system", "content": args.context}]
    for turn in args.turn:
        name, _, text = turn.partition(":")
        messages.append({"role": "user", "name": name.strip(), "content": text.strip()})
    inputs = tokenizer.apply_chat_template(
        messages,
        topic=topic,
        assistant_name=args.speaker,
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    if model.config.conditioning == "text":  # the default: vectors from the Topik and Konteks text, any text
        encode = lambda text: tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]  # noqa: E731
        conditioning = {"topic_input_ids": encode(topic), "context_input_ids": encode(args.context)}
    else:  # "ids": a learned row per known name (0 = unknown)
        conditioning = {
            "topic_ids": torch.tensor([topics.index(topic) if topic in topics else 0]),
            "context_ids": torch.tensor([contexts.index(args.context) if args.context in contexts else 0]),
        }
    torch.manual_seed(args.seed)
    output = model.generate(
        **inputs,
        **conditioning,
        max_new_tokens=args.max_new_tokens,
        do_sample=True,
        top_p=0.95,
        temperature=0.8,
    )  # the reply ends at the end of its turn: the saved generation config's eos ids include the newline tokens
    reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    print(tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=True) + " " + reply)


if __name__ == "__main__":
    main()
