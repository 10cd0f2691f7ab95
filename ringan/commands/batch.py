"""`ringan generate --prompts FILE`: replies to many conversations at once, batched through the lean decode loop."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from ..data import MAX_PROMPT_LINE, Turn, check_label, clean_reply, normalise, render_dialogue
from ..decoding import Decoder, make_backend
from ..errors import UserError
from ..files import regular_file, writing
from ..tokenization import encode_text, end_of_turn_ids


def read_prompts(path: str | Path) -> list[dict]:
    """The conversations of a `--prompts` JSONL file, each checked; an error names the file and line."""
    path = regular_file(path, "prompts file")
    rows = []
    expected = '{"topic", "context", "turns": [["Name", "text"], ...], "speaker"}'
    try:
        with path.open(encoding="utf-8", newline="") as f:
            # a line read with a limit: one line of gigabytes is refused without reading it whole
            for number, line in enumerate(iter(lambda: f.readline(MAX_PROMPT_LINE + 2), ""), start=1):
                if len(line) > MAX_PROMPT_LINE:
                    raise UserError(
                        f"{path}:{number}: a line longer than {MAX_PROMPT_LINE:,} characters; one conversation per "
                        "line, each at most that long"
                    )
                if line.strip():
                    rows.append(_prompt(line.rstrip("\r\n"), f"{path}:{number}", expected))
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not valid UTF-8 ({err.reason}); save the file as UTF-8") from None
    if not rows:
        raise UserError(f"{path}: no conversations in the prompts file")
    return rows


def _prompt(line: str, where: str, expected: str) -> dict:
    """One conversation of a prompts file, checked by the data format's rules."""
    try:
        row = json.loads(line)
        if not isinstance(row, dict):
            raise ValueError("not a JSON object")
        turns = row.get("turns", [])
        if not isinstance(turns, list) or not all(
            isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in turns
        ):
            raise ValueError('"turns" must be a list of ["Name", "text"] pairs of strings')
        turns = [Turn(normalise(speaker), normalise(text)) for speaker, text in turns]
        if "speaker" not in row or not isinstance(row["speaker"], str):
            raise ValueError('"speaker" must be the name of who replies')
        speaker = normalise(row["speaker"])
        Turn(speaker, "x")  # the same rules for a speaker's name as in the data format
        topic, context = row.get("topic"), row.get("context")
        topic = None if topic is None else check_label(topic, "topic")
        context = None if context is None else check_label(context, "context")
    except RecursionError:  # json's parser recurses once per nesting level
        raise UserError(f"{where}: expected {expected}: nested too deeply") from None
    except ValueError as err:
        raise UserError(f"{where}: expected {expected}: {' '.join(str(err).split())[:300]}") from None
    return {"topic": topic, "context": context, "turns": turns, "speaker": speaker, "line": line}


def _conditioning(model, tok, rows: list[dict]) -> dict:
    """The batch's conditioning inputs (`config.conditioning`), padded across rows."""
    from ..decoding import conditioning_batch
    from ..labels import LabelVocab

    topics = LabelVocab(model.config.topic_names or [])
    contexts = LabelVocab(model.config.context_names or [])
    return conditioning_batch(
        model, tok, [(r["topic"], topics.id(r["topic"]), r["context"], contexts.id(r["context"])) for r in rows]
    )


def generate_batch(o, model, tok, rows: list[dict], output: Path | None = None) -> list[dict]:
    """Reply to every conversation of `rows` (`read_prompts`), `o.batch_size` at a time (left-padded, rows leave
    the batch as they finish), with a progress bar. Each batch's replies are written (one JSON object per line:
    the input and its `"reply"`) as soon as they are made, so an interrupted run keeps every reply made so far."""
    from tqdm.auto import tqdm

    backend, runtime = make_backend(model, None, "torch")  # batches: torch (the ONNX graphs take one row)
    decoder = Decoder(backend, stop_ids=end_of_turn_ids(tok), pad_token_id=tok.pad_token_id)
    print(f"(runtime: {runtime}, batches of {o.batch_size})", file=sys.stderr, flush=True)
    results = []
    with contextlib.ExitStack() as stack:
        sink = sys.stdout
        if output is not None:
            stack.enter_context(writing(output, "the replies"))
            sink = stack.enter_context(output.open("w", encoding="utf-8"))
        bar = stack.enter_context(tqdm(total=len(rows), desc="replies", unit="reply", file=sys.stderr))
        for start in range(0, len(rows), o.batch_size):
            chunk = rows[start : start + o.batch_size]
            prompts = [
                encode_text(tok, render_dialogue(r["topic"], r["context"], r["turns"], r["speaker"]))["input_ids"]
                for r in chunk
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
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            sink.flush()
            bar.update(len(chunk))
    if output is not None:
        print(f"wrote {len(results)} replies to {output}", file=sys.stderr)
    return results
