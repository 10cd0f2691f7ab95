"""`ringan generate --prompts FILE`: replies to many conversations at once, batched through the lean decode loop."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ..data import Turn, clean_reply, render_dialogue
from ..decoding import Decoder, make_backend
from ..errors import UserError
from ..files import write_text_atomically
from ..tokenization import end_of_turn_ids
from ..training import conditioning_tokens


def read_prompts(path: str | Path) -> list[dict]:
    """The conversations of a `--prompts` JSONL file, each checked; an error names the file and line."""
    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read the prompts file ({err})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("expected a JSON object")
            turns = [Turn(str(speaker), str(text)) for speaker, text in row.get("turns", [])]
            speaker = str(row["speaker"]).strip()
            Turn(speaker, "x")  # the same rules for a speaker's name as in the data format
            topic, context = row.get("topic"), row.get("context")
        except (ValueError, KeyError, TypeError) as err:
            message = f"missing {err}" if isinstance(err, KeyError) else str(err)
            raise UserError(
                f'{path}:{number}: expected {{"topic", "context", "turns": [["Name", "text"], ...], "speaker"}}: {message}'
            ) from None
        rows.append({"topic": topic, "context": context, "turns": turns, "speaker": speaker, "line": line})
    if not rows:
        raise UserError(f"{path}: no conversations in the prompts file")
    return rows


def _conditioning(model, tok, rows: list[dict]) -> dict:
    """The batch's conditioning inputs (`config.conditioning`), padded across rows."""
    mode = getattr(model.config, "conditioning", "ids")
    if mode == "text":
        out = {}
        lists = [conditioning_tokens(tok, r["topic"], r["context"]) for r in rows]
        for k, name in enumerate(("topic", "context")):
            width = max(len(x[k]) for x in lists)
            if width == 0:
                continue
            ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, x in enumerate(lists):
                ids[i, : len(x[k])] = torch.tensor(x[k], dtype=torch.long)
                mask[i, : len(x[k])] = 1
            out[f"{name}_input_ids"], out[f"{name}_attention_mask"] = ids, mask
        return out
    if mode == "ids":
        from ..labels import LabelVocab

        topics = LabelVocab(model.config.topic_names or [])
        contexts = LabelVocab(model.config.context_names or [])
        return {
            "topic_ids": torch.tensor([topics.id(r["topic"]) for r in rows]),
            "context_ids": torch.tensor([contexts.id(r["context"]) for r in rows]),
        }
    return {}


def generate_batch(o, model, tok) -> list[dict]:
    """Reply to every conversation of `o.prompts`, `o.batch_size` at a time (left-padded, rows leave the batch as
    they finish), with a progress bar; write one JSON object per line (the input and its `"reply"`)."""
    from tqdm.auto import tqdm

    rows = read_prompts(o.prompts)
    backend, runtime = make_backend(model, None, "torch")  # batches: torch (the ONNX graphs take one row)
    decoder = Decoder(backend, stop_ids=end_of_turn_ids(tok), pad_token_id=tok.pad_token_id)
    print(f"(runtime: {runtime}, batches of {o.batch_size})", file=sys.stderr, flush=True)
    results = []
    with tqdm(total=len(rows), desc="replies", unit="reply", file=sys.stderr) as bar:
        for start in range(0, len(rows), o.batch_size):
            chunk = rows[start : start + o.batch_size]
            prompts = [
                tok(render_dialogue(r["topic"], r["context"], r["turns"], r["speaker"]))["input_ids"] for r in chunk
            ]
            outputs = decoder.generate(
                prompts,
                o.max_new_tokens,
                o.sampling(),
                conditioning=_conditioning(model, tok, chunk),
                seed=o.seed + start,
            )
            for r, tokens in zip(chunk, outputs):
                row = json.loads(r["line"])
                row["reply"] = clean_reply(tok.decode(tokens, skip_special_tokens=True))
                results.append(row)
            bar.update(len(chunk))
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
    if o.output:
        write_text_atomically(o.output, text, "the replies")
        print(f"wrote {len(results)} replies to {o.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return results
