"""`ringan eval`: perplexity and bits per byte of a saved model, overall and per speaker."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..data import read_dialogues
from ..files import check_output_file, write_text_atomically
from ..loading import load_model
from ..options import Options, option
from .common import data_option, data_paths, model_folder, model_option, set_threads, threads_option


@dataclass(frozen=True, kw_only=True)
class EvalOptions(Options):
    """Perplexity and bits per byte of a checkpoint on dialogue files, overall and per speaker."""

    model: str | None = model_option("a saved model folder (with its tokenizer)")
    data: list[str] | None = data_option()
    batch_size: int = option(8, "sequences per forward pass", minimum=1, maximum=65536)
    max_length: int = option(1024, "tokens per sequence window", minimum=2, maximum=131072)
    json_output: str | None = option(None, "also write the results to this JSON file")
    progress: bool = option(True, "progress bars on stderr while evaluating")
    threads: int = threads_option()


def evaluate(options: EvalOptions | None = None, /, **overrides) -> dict:
    """Print the overall metrics and a per-speaker table; returns `{"overall": {...}, "per_speaker": {...}}`."""
    from ..training import entry_to_examples, evaluate_by_speaker, evaluate_examples, model_vocabularies

    o = EvalOptions.build(options, overrides)
    set_threads(o.threads)
    model_dir = model_folder(o.model)
    paths = data_paths(o.data)
    json_output = (
        check_output_file(o.json_output, paths, "--json-output", protected=[model_dir]) if o.json_output else None
    )  # checked before the (long) evaluation
    model, tok = load_model(model_dir)
    entries = read_dialogues(paths)
    topics, contexts = model_vocabularies(model.config)
    examples = [x for e in entries for x in entry_to_examples(e, tok, topics, contexts, o.max_length)]
    overall = evaluate_examples(model, examples, o.batch_size, tok.pad_token_id, progress=o.progress)
    per_speaker = evaluate_by_speaker(model, tok, entries, o.max_length, progress=o.progress)
    print(
        f"eval: {len(entries)} entries, {overall['tokens']} tokens: loss {overall['loss']:.4f}, "
        f"perplexity {overall['perplexity']:.2f}, bits/byte {overall['bits_per_byte']:.4f}"
    )
    print(f"{'speaker':<24} {'tokens':>8} {'loss':>8} {'ppl':>10} {'bits/byte':>10}")
    for name, m in per_speaker.items():
        print(
            f"{name[:24]:<24} {m['tokens']:>8} {m['loss']:>8.4f} {m['perplexity']:>10.2f} {m['bits_per_byte']:>10.4f}"
        )
    result = {"overall": overall, "per_speaker": per_speaker}
    if json_output:
        write_text_atomically(json_output, json.dumps(result, indent=1, ensure_ascii=False), "the results")
    return result
