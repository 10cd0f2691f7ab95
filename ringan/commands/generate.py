"""`ringan generate`: continue a dialogue for a Topik and Konteks, one speaker's turn at a time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..data import MAX_CONTEXT, MAX_PROMPT_LINE, MAX_TOPIC, Turn, clean_reply, render_dialogue
from ..defaults import RUNTIMES
from ..errors import OptionError
from ..files import check_output_file, readable_folder
from ..options import Options, option
from .common import (
    load_model,
    model_folder,
    model_option,
    resolve_context,
    resolve_topic,
    set_threads,
    threads_option,
)

FALLBACK_SPEAKERS = ("Kiann", "Caecillia", "Pembicara")  # fill a conversation up to two speakers


@dataclass(frozen=True, kw_only=True)
class SamplingOptions(Options):
    """How replies are decoded (shared by `ringan generate` and `ringan chat`)."""

    max_new_tokens: int = option(120, "at most this many tokens per reply", minimum=1, maximum=131072)
    temperature: float = option(0.8, "sampling temperature", minimum=0.01, maximum=100)
    top_k: int = option(50, "sample from the k most likely tokens (0 = all)", minimum=0, maximum=1_000_000)
    top_p: float = option(0.95, "nucleus sampling threshold", above=0, maximum=1)
    repetition_penalty: float = option(1.1, ">1 discourages repeating tokens", minimum=0.01, maximum=100)
    greedy: bool = option(False, "greedy decoding instead of sampling")
    seed: int = option(0, "random seed for sampling")
    runtime: str = option(
        "auto",
        "decode loop: torch, onnx (ONNX Runtime; exported once into a cache, ~/.cache/ringan or $RINGAN_CACHE) or "
        "auto (onnx when onnxruntime is installed, else torch)",
        choices=RUNTIMES,
    )
    threads: int = threads_option()

    def sampling(self):
        """The decoding settings of the lean decode loop (`ringan.decoding.Sampling`)."""
        from ..decoding import Sampling

        if self.greedy:
            return Sampling(greedy=True, repetition_penalty=self.repetition_penalty)
        return Sampling(
            temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, repetition_penalty=self.repetition_penalty
        )

    def generate_kwargs(self) -> dict:
        """The decoding arguments of `model.generate()`."""
        if self.greedy:
            return {"do_sample": False, "repetition_penalty": self.repetition_penalty}
        return {
            "do_sample": True,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
        }


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


class Replier:
    """Replies through the lean decode loop (`ringan.decoding`) with the runtime the options ask for; says which
    one on standard error. A reply ends at its first newline (an utterance is one line)."""

    def __init__(self, model, tok, model_dir, options: SamplingOptions):
        import sys

        from ..decoding import Decoder, make_backend
        from ..tokenization import end_of_turn_ids

        backend, self.runtime = make_backend(model, model_dir, options.runtime, options.threads or None)
        self.tok, self.options = tok, options
        self.decoder = Decoder(backend, stop_ids=end_of_turn_ids(tok), pad_token_id=tok.pad_token_id)
        print(f"(runtime: {self.runtime})", file=sys.stderr, flush=True)

    def reply(self, prompt_ids: list[int], conditioning: dict, seed: int, stream: bool, state=None):
        """`(the reply's text, its tokens)`; with `state`, `prompt_ids` are the tokens the state has not seen."""
        generated: list[int] = []
        shown = [""]

        def show(rows, tokens):
            generated.extend(tokens)
            text = self.tok.decode(generated, skip_special_tokens=True).split("\n")[0]
            print(text[len(shown[0]) :], end="", flush=True)
            shown[0] = text

        tokens = self.decoder.generate(
            [prompt_ids],
            self.options.max_new_tokens,
            self.options.sampling(),
            conditioning=conditioning,
            seed=seed,
            on_step=show if stream else None,
            state=state,
        )[0]
        if stream:
            print()
        return clean_reply(self.tok.decode(tokens, skip_special_tokens=True)), tokens


def parse_turns(turns: Sequence[str] | None) -> list[Turn]:
    """`--turn 'Name: text'` values as turns."""
    parsed = []
    for raw in turns or []:
        name, sep, text = raw.partition(":")
        if not sep or not name.strip() or not text.strip():
            raise OptionError("--turn", "expected 'Name: text'", repr(raw))
        parsed.append(Turn(name.strip(), text.strip()))
    return parsed


def conditioning_inputs(model, tok, topic: str | None, topic_id: int, context: str | None, context_id: int) -> dict:
    """The topic/Konteks inputs of a batch of one; lives in `ringan.decoding` (the server uses it too), imported
    here lazily so `ringan --help` stays free of torch."""
    from ..decoding import conditioning_inputs as inputs

    return inputs(model, tok, topic, topic_id, context, context_id)


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
