"""`ringan generate`: continue a dialogue for a Topik and Konteks, one speaker's turn at a time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..data import MAX_CONTEXT, MAX_PROMPT_LINE, MAX_TOPIC, Turn, clean_reply, render_dialogue
from ..errors import OptionError
from ..files import check_output_file, readable_folder
from ..loading import load_model
from ..options import option
from .common import model_folder, model_option, resolve_context, resolve_topic, set_threads
from .sampling import Replier, SamplingOptions

FALLBACK_SPEAKERS = ("Kiann", "Caecillia", "Pembicara")  # fill a conversation up to two speakers


@dataclass(frozen=True, kw_only=True)
class GenerateOptions(SamplingOptions):
    """Continue a dialogue for a Topik and Konteks: each reply stops at the end of the speaker's turn."""

    model: str | None = model_option()
    topic: str | None = option(
        None,
        f"the Topik, by name (see config.topic_names) or id; one line, at most {MAX_TOPIC} characters",
        default_text="the first known topic",
    )
    context: str | None = option(
        None,
        f"the Konteks paragraph (a known one also selects its context id); one line, at most {MAX_CONTEXT} characters",
        default_text="the topic's",
    )
    turn: list[str] | None = option(None, "opening turns, each as 'Name: text' (repeatable)")
    speaker: str | None = option(
        None, "who speaks next", default_text="the other of the last two speakers, or the second of --speakers"
    )
    speakers: list[str] | None = option(None, "two names to alternate when generating several turns")
    num_turns: int = option(1, "how many turns to generate", minimum=1)
    stream: bool = option(True, "print tokens as they are generated")
    prompts: str | None = option(
        None,
        "a JSONL file of conversations to reply to in batches (synthetic data): one object per line with "
        '"topic", "context", "turns" ([["Name", "text"], ...]) and "speaker" (who replies); each line at most '
        f"{MAX_PROMPT_LINE:,} characters",
    )
    output: str | None = option(
        None,
        "with --prompts: the JSONL file the replies go to, each batch's as soon as it is made (never an input or a "
        "model folder's file)",
        default_text="standard output",
    )
    batch_size: int = option(
        32,
        "with --prompts: conversations decoded at once (128: ~1.3x the tokens/s of 32 on two cores, 4x the memory)",
        minimum=1,
        maximum=4096,
    )


def generate(options: GenerateOptions | None = None, /, **overrides) -> list[Turn]:
    """Print the conversation and `num_turns` generated turns; returns every turn (the opening ones included)."""

    from ..decoding import conditioning_inputs
    from ..tokenization import encode_text

    o = GenerateOptions.build(options, overrides)
    set_threads(o.threads)
    model_dir = readable_folder(model_folder(o.model))  # a model caught mid-save is read from its complete copy
    if o.output and not o.prompts:
        raise OptionError("--output", "only with --prompts (it names the JSONL file the replies go to)", repr(o.output))
    if o.prompts:
        from .batch import generate_batch, read_prompts

        rows = read_prompts(o.prompts)  # every input checked before the model is loaded
        output = check_output_file(o.output, [o.prompts], "--output", protected=[model_dir]) if o.output else None
        model, tok = load_model(model_dir)
        return generate_batch(o, model, tok, rows, output)
    model, tok = load_model(model_dir)
    topic_id, topic_name = resolve_topic(model.config, o.topic)
    context_id, context_text = resolve_context(model_dir, model.config, topic_name, o.context)
    turns = parse_turns(o.turn)
    names = list(o.speakers or [])
    for t in turns:
        if t.speaker not in names:
            names.append(t.speaker)
    if o.speaker and o.speaker not in names:
        names.append(o.speaker)
    for default in FALLBACK_SPEAKERS:
        if len(names) < 2 and default not in names:
            names.append(default)
    next_speaker = o.speaker or (names[(names.index(turns[-1].speaker) + 1) % len(names)] if turns else names[0])
    replier = Replier(model, tok, model_dir, o)
    conditioning = conditioning_inputs(model, tok, topic_name, topic_id, context_text, context_id)
    print(render_dialogue(topic_name, context_text, turns), end="")
    for i in range(o.num_turns):
        prompt = render_dialogue(topic_name, context_text, turns, next_speaker)
        if o.stream:
            print(f"{next_speaker}:", end="", flush=True)
        reply, _ = replier.reply(encode_text(tok, prompt)["input_ids"], conditioning, o.seed + i, o.stream)
        if not o.stream:
            print(f"{next_speaker}: {reply}\n")
        turns.append(Turn(next_speaker, reply or "..."))
        next_speaker = names[(names.index(next_speaker) + 1) % len(names)]
    return turns


def parse_turns(turns: Sequence[str] | None) -> list[Turn]:
    """`--turn 'Name: text'` values as turns."""
    parsed = []
    for raw in turns or []:
        name, sep, text = raw.partition(":")
        if not sep or not name.strip() or not text.strip():
            raise OptionError("--turn", "expected 'Name: text'", repr(raw))
        parsed.append(Turn(name.strip(), text.strip()))
    return parsed


def generate_reply(
    model,
    tok,
    prompt: str,
    topic_id: int,
    context_id: int,
    max_new_tokens: int,
    sampling: dict,
    streamer=None,
    *,
    topic: str | None = None,
    context: str | None = None,
) -> str:
    """One reply to a prompt that ends in `Speaker:`. It ends at its first newline (an utterance is one line): the
    newline tokens are end-of-turn ids, as in the saved `generation_config`."""
    from ..decoding import conditioning_inputs
    from ..tokenization import encode_text, end_of_turn_ids

    enc = encode_text(tok, prompt, return_tensors="pt")
    out = model.generate(
        **enc,
        **conditioning_inputs(model, tok, topic, topic_id, context, context_id),
        max_new_tokens=max_new_tokens,
        eos_token_id=end_of_turn_ids(tok),
        pad_token_id=tok.pad_token_id,
        streamer=streamer,
        **sampling,
    )
    return clean_reply(tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
