"""Old import paths of `ringan.app`, kept for code written against them; the verbs live in `ringan.commands`.

Only names whose calling convention is unchanged are kept (the old `*_job` functions that took positional
arguments are gone: call the verb functions with their options dataclass or keywords instead).
"""

from .commands.chat import ChatSession
from .commands.chat import chat as chat_job
from .commands.common import load_model, load_tokenizer, set_threads
from .commands.generate import generate as generate_job
from .commands.generate import generate_reply
from .commands.train import train as train_job
from .data import render_dialogue as prompt_text

__all__ = [
    "ChatSession",
    "chat_job",
    "generate_job",
    "generate_reply",
    "load_model",
    "load_tokenizer",
    "prompt_text",
    "set_threads",
    "train_job",
]
