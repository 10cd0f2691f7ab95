"""The model card (`README.md`) `ringan train` writes into a model folder: Hub metadata, size, data, held-out
figures, usage with the model's form of conditioning, and its topics."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from .data import Entry, corpus_statistics


def model_card(
    config,
    n_params: int,
    entries: Sequence[Entry],
    train_entries: Sequence[Entry],
    val_entries: Sequence[Entry],
    metrics: dict,
    data: Sequence[str] | None,
    text: Sequence[str] | None,
    base_model: str | None = None,
    model_id: str = ".",
    base_hub_id: str | None = None,
) -> str:
    """The `README.md` of a trained model: Hub metadata, size, data, held-out metrics, usage and topics.
    `base_model` names what it was fine-tuned from; only a real Hub id (`base_hub_id`) goes into the metadata.
    `model_id`: where the usage snippet loads it from (`ringan push` puts the repository there)."""
    stats = corpus_statistics(entries)
    topics = [n for n in (config.topic_names or [])[1:]]
    sources = ", ".join(str(p) for p in (data or ["the corpus shipped with ringan"]))
    metric_lines = (
        _metric_lines(metrics["eval_loss"], metrics["eval_perplexity"], metrics["eval_bits_per_byte"])
        if metrics
        else NO_VALIDATION_LINE
    )
    return textwrap.dedent(
        """\
        ---
        library_name: transformers
        language:
        - id
        license: {license}
        pipeline_tag: text-generation{base_meta}
        tags:
        - ringan
        - linear-attention
        - dialogue
        ---

        # Ringan dialogue model

        A small decoder-only language model for Indonesian dialogue: every token's input is
        `token_emb + topic_emb + context_emb`, with RoPE and the `{attention}` sequence mixer (linear attention:
        long contexts cost a fixed-size state instead of a growing KV cache).

        | | |
        | --- | --- |
        | parameters | {params:,} |
        | width / layers / heads | {hidden} / {layers} / {heads} |
        | vocabulary | {vocab} |
        | topic / context vectors | {conditioning_row} |
        | training data | {sources}{extra}: {entries} entries, {turns} turns ({n_train} train / {n_val} validation) |
        | started from | {started} |

        {metrics}
        ## Usage

        ```python
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_id = "{model_id}"
        tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=True)  # the config has auto_map
        model = AutoModelForCausalLM.from_pretrained(model_id, trust_remote_code=True)
        messages = [{{"role": "system", "content": "Konteks ..."}}, {{"role": "user", "name": "Kiann", "content": "Halo!"}}]
        ids = tokenizer.apply_chat_template(messages, topic="{topic}", assistant_name="Caecillia",
                                            add_generation_prompt=True, return_tensors="pt", return_dict=True,
                                            sanitize_control_tokens=True)  # "</s>" in a message stays text
        {conditioning_code}
        print(tokenizer.decode(out[0], skip_special_tokens=True))
        ```

        The reply stops at the end of its turn by itself: `generation_config.json` lists `</s>` and every newline
        token as end-of-turn ids (an utterance is one line). {conditioning_note}

        ## Topics

        {topic_list}
        """
    ).format(
        attention=config.attention_type,
        params=n_params,
        hidden=config.hidden_size,
        layers=config.num_hidden_layers,
        heads=config.num_attention_heads,
        vocab=config.vocab_size,
        conditioning_row=(
            "from the Topik and Konteks text (any text)"
            if getattr(config, "conditioning", "ids") == "text"
            else f"{config.num_topics} / {config.num_contexts} id rows (0 = unknown)"
            if getattr(config, "conditioning", "ids") == "ids"
            else "none"
        ),
        sources=sources,
        extra=f" + plain text {', '.join(text)}" if text else "",
        entries=stats["entries"],
        turns=stats["turns"],
        n_train=len(train_entries),
        n_val=len(val_entries),
        metrics="| metric (held-out entries) | value |\n| --- | --- |\n" + metric_lines,
        topic=topics[0] if topics else "...",
        topic_list="\n".join(f"{i + 1}. {t}" for i, t in enumerate(topics)) or "(none)",
        license="cc-by-sa-4.0" if base_model else "apache-2.0",
        base_meta=f"\nbase_model: {base_hub_id}" if base_hub_id else "",
        model_id=model_id,
        started=f"fine-tuned from {base_model}" if base_model else "random weights",
        **_conditioning_usage(config, topics[0] if topics else "..."),
    )


NO_VALIDATION_LINE = "| (no validation split) | |\n"


def _metric_lines(loss: float, perplexity: float, bits_per_byte: float) -> str:
    return f"| loss | {loss:.4f} |\n| perplexity | {perplexity:.2f} |\n| bits per byte | {bits_per_byte:.4f} |\n"


def card_with_held_out(card: str, overall: dict, entries: int) -> str:
    """A card written without a validation split, given the figures of a separate held-out evaluation (what
    `ringan eval` returns as `overall`), e.g. the quickstart's 5 held-out entries."""
    lines = _metric_lines(overall["loss"], overall["perplexity"], overall["bits_per_byte"])
    return card.replace(NO_VALIDATION_LINE, lines + f"| held-out entries | {entries} |\n")


def _conditioning_usage(config, topic: str) -> dict:
    """The card's lines on passing the topic and Konteks, for the model's form of conditioning."""
    if getattr(config, "conditioning", "ids") == "text":
        code = (
            'text = dict(add_special_tokens=False, split_special_tokens=True, return_tensors="pt")  # text stays text\n'
            f'cond = {{"topic_input_ids": tokenizer("{topic}", **text).input_ids,\n'
            '        "context_input_ids": tokenizer("Konteks ...", **text).input_ids}\n'
            "out = model.generate(**ids, **cond, max_new_tokens=60)"
        )
        note = (
            "`topic_input_ids` / `context_input_ids` are the tokens of any Topik and Konteks, seen in training or not: "
            "the model turns them into the topic and context vectors added to every token."
        )
    else:
        code = "out = model.generate(**ids, topic_ids=torch.tensor([1]), max_new_tokens=60)"
        note = "`topic_ids` / `context_ids` index `config.topic_names` / `config.context_names` (0 = unknown)."
    return {"conditioning_code": code, "conditioning_note": note}
