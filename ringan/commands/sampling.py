"""What `ringan generate` and `ringan chat` share: their sampling options and the reply loop they print through."""

from __future__ import annotations

from dataclasses import dataclass

from ..data import clean_reply
from ..defaults import RUNTIMES
from ..defaults import SAMPLING_DEFAULTS as SAMPLING
from ..options import Options, option
from .common import threads_option


@dataclass(frozen=True, kw_only=True)
class SamplingOptions(Options):
    """How replies are decoded (shared by `ringan generate` and `ringan chat`)."""

    max_new_tokens: int = option(
        SAMPLING["max_new_tokens"], "at most this many tokens per reply", minimum=1, maximum=131072
    )
    temperature: float = option(SAMPLING["temperature"], "sampling temperature", minimum=0.01, maximum=100)
    top_k: int = option(
        SAMPLING["top_k"], "sample from the k most likely tokens (0 = all)", minimum=0, maximum=1_000_000
    )
    top_p: float = option(SAMPLING["top_p"], "nucleus sampling threshold", above=0, maximum=1)
    repetition_penalty: float = option(
        SAMPLING["repetition_penalty"], ">1 discourages repeating tokens", minimum=0.01, maximum=100
    )
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
