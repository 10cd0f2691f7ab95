"""The verbs of the `ringan` command, one module each; `VERBS` maps a verb's name to its options and function.

Every verb function takes its options dataclass, keyword overrides, or both, and is callable from Python:
`train(TrainOptions(max_steps=10))`, `train(max_steps=10)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..options import Options
from . import chat, convert, evaluate, generate, hub, quickstart, serve, tokenizer, train


@dataclass(frozen=True)
class Verb:
    options: type[Options]
    run: Callable


VERBS: dict[str, Verb] = {
    "tokenizer": Verb(tokenizer.TokenizerOptions, tokenizer.train_tokenizer),
    "train": Verb(train.TrainOptions, train.train),
    "eval": Verb(evaluate.EvalOptions, evaluate.evaluate),
    "generate": Verb(generate.GenerateOptions, generate.generate),
    "chat": Verb(chat.ChatOptions, chat.chat),
    "push": Verb(hub.PushOptions, hub.push),
    "quantize": Verb(convert.QuantizeOptions, convert.quantize),
    "export": Verb(convert.ExportOptions, convert.export),
    "convert": Verb(convert.ConvertOptions, convert.convert),
    "quickstart": Verb(quickstart.QuickstartOptions, quickstart.quickstart),
    "serve": Verb(serve.ServeOptions, serve.serve),
}
