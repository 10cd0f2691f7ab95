"""`ringan push`: publish a model folder to the Hub, and the model card (`README.md`) that training writes for it."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data import Entry, corpus_statistics
from ..errors import OptionError, UserError
from ..options import Options, option
from .common import TOPIC_CONTEXTS_FILE, check_model_folder, check_saved_model, model_folder, model_option

# what a model folder needs on the Hub besides its modeling code (the `.py` files its config.json's auto_map names)
PUSHED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "README.md",
    TOPIC_CONTEXTS_FILE,
)


@dataclass(frozen=True, kw_only=True)
class PushOptions(Options):
    """Publish a saved model folder to the Hugging Face Hub (weights, modeling files, tokenizer, model card)."""

    model: str | None = model_option()
    repo_id: str = option("", "the Hub repository, e.g. 'user/ringan-dialog'")
    private: bool = option(False, "create the repository as private")
    token: str | None = option(None, "a Hub token", default_text="the logged-in one")
    commit_message: str = option("Upload Ringan model", "the commit message")
    dry_run: bool = option(False, "list the files and print the model card that would be uploaded; upload nothing")


def push(options: PushOptions | None = None, /, **overrides) -> str:
    """Upload the files the model needs (weights, config, tokenizer, card, modeling code) in one commit; nothing
    else in the folder, and nothing a link points to outside it. Returns the repo URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    o = PushOptions.build(options, overrides)
    if not o.repo_id or "/" not in o.repo_id:
        raise OptionError("--repo-id", "expected 'user/name'", repr(o.repo_id))
    folder = check_model_folder(model_folder(o.model))
    missing = [n for n in ("modeling_ringan.py", "README.md") if not (folder / n).is_file()]
    if missing:
        raise UserError(f"{folder}: cannot publish, missing {', '.join(missing)} (save it with `ringan train`)")
    check_saved_model(folder)  # a damaged folder is never published
    files = files_to_push(folder)
    left_out = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if (p.is_file() or p.is_symlink()) and p not in files
    )
    card = card_for_repo((folder / "README.md").read_text(encoding="utf-8"), o.repo_id)
    if left_out:
        shown = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
        print(f"push: leaves out {len(left_out)} files a model does not need ({shown})")
    if o.dry_run:
        print(f"push --dry-run: would upload {len(files)} files of {folder} to {o.repo_id} (private: {o.private}):")
        for path in files:
            print(f"  {path.name:<32} {path.stat().st_size:>12,} bytes")
        print("\n== README.md (the model card, as it would be uploaded) ==\n" + card)
        return f"https://huggingface.co/{o.repo_id}"
    operations = [
        CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=card.encode() if p.name == "README.md" else str(p))
        for p in files
    ]
    try:
        api = HfApi(token=o.token)
        url = api.create_repo(o.repo_id, private=o.private, exist_ok=True, repo_type="model")
        api.create_commit(repo_id=o.repo_id, repo_type="model", operations=operations, commit_message=o.commit_message)
    except Exception as err:  # network, authentication, the Hub's refusals: one line, never a traceback
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise UserError(f"push to {o.repo_id} failed: {type(err).__name__}: {first}") from None
    print(f"pushed {len(files)} files of {folder} to {url}")
    return str(url)


def card_for_repo(card: str, repo_id: str) -> str:
    """The model card as uploaded to `repo_id`: its usage snippet loads from the repository, not the local folder."""
    import re

    return re.sub(r'^model_id = ".*"$', lambda _: f'model_id = "{repo_id}"', card, flags=re.MULTILINE)


def _inside(folder: Path, path: Path) -> Path:
    """`path`, if it really lies in `folder`: a link that leads out of it is refused, except the shipped base's
    links to this package's own modeling code (the code the folder runs with `trust_remote_code`)."""
    modeling = Path(__file__).resolve().parents[1] / "modeling"
    if path.suffix == ".py" and path.resolve().parent == modeling:
        return path
    if folder.resolve() not in path.resolve().parents:
        raise UserError(
            f"{path}: is a link to {path.resolve()}, outside the model folder; push never follows a link out of the "
            "folder (copy the file in instead)"
        )
    return path


def files_to_push(folder: Path) -> list[Path]:
    """The files of a model folder that go to the Hub: `PUSHED_FILES`, the weight shards an index names, and the
    modeling code `config.json`'s `auto_map` names with the files it imports."""
    import json
    import re

    names = [n for n in PUSHED_FILES if (folder / n).is_file()]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names += sorted(set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values()))
    auto_map = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("auto_map") or {}
    # a value is "module.Class" or, in the standard form for tokenizers, a list of them (None for a missing one)
    refs = [
        r
        for v in (auto_map.values() if isinstance(auto_map, dict) else [None])
        for r in (v if isinstance(v, list) else [v])
    ]
    if not isinstance(auto_map, dict) or not all(r is None or isinstance(r, str) for r in refs):
        raise UserError(
            f"{folder / 'config.json'}: auto_map: expected a mapping of class -> 'module.Class' (or a list of them)"
        )
    modules = [ref.split("--")[-1].rsplit(".", 1)[0] for ref in refs if ref]
    code: list[str] = []
    while modules:
        module = modules.pop()
        name = f"{module}.py"
        if name in code or not (folder / name).is_file():
            continue
        code.append(name)
        text = _inside(folder, folder / name).read_text(encoding="utf-8")
        modules += re.findall(r"^\s*from\s+\.(\w+)\s+import", text, flags=re.MULTILINE)
    return [_inside(folder, folder / n) for n in dict.fromkeys([*names, *sorted(code)])]


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
