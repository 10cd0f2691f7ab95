"""`ringan`: one command-line entry point for every verb; it parses the options and dispatches to `ringan.commands`.

Each verb's options are a dataclass in its module (`ringan/commands/`), and its `--help` is built from it. Every
verb also takes `--config FILE` (YAML or JSON): its keys are option names, checked and converted like the flags,
and flags override them. Errors in the user's input print one line and exit with status 2; set `RINGAN_DEBUG=1`
for tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys

from .commands import VERBS
from .data import DialogueFormatError
from .errors import ReplicaStopped, UserError
from .options import Options, add_arguments, convert, description, flag, option_fields, read_config, unknown_option


class UsageError(UserError):
    """A command line that does not parse; `prog` is `ringan` or `ringan <verb>`."""

    def __init__(self, prog: str, message: str):
        self.prog, self.message = prog, message
        super().__init__(message)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, without argparse's usage block
        raise UsageError(self.prog, message.removeprefix("argument "))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ringan",
        description="Ringan: train, evaluate, generate with, chat with, quantize, export and publish small "
        "long-context dialogue models on the Hugging Face stack.",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for name, verb in VERBS.items():
        text = description(verb.options)
        verb_parser = sub.add_parser(
            name, help=text.split("\n\n")[0].replace("\n", " "), description=text, allow_abbrev=False
        )
        verb_parser.add_argument(
            "--config", default=None, metavar="FILE", help="YAML or JSON file of option values (flags override them)"
        )
        add_arguments(verb_parser, verb.options)
    return parser


def parse_command_line(argv: list[str]) -> tuple[str | None, Options | None]:
    """`(verb, options)` from a command line (`(None, None)` when it names no verb); flags override the values
    of a `--config` file, which override the defaults."""
    namespace, extras = build_parser().parse_known_args(argv)
    prog = f"ringan {namespace.verb}" if namespace.verb else "ringan"
    options_class = VERBS[namespace.verb].options if namespace.verb else None
    if extras:
        if not extras[0].startswith("-") or options_class is None:
            raise UsageError(prog, f"unexpected argument {extras[0]!r}")
        given = extras[0].split("=")[0]
        known = list(option_fields(options_class))
        raise UsageError(prog, str(unknown_option(given, given.lstrip("-").replace("-", "_"), known, spell=flag)))
    if options_class is None:
        return None, None
    values = dict(vars(namespace))
    del values["verb"]
    config = values.pop("config")
    try:
        merged = read_config(config, options_class) if config else {}
        merged.update({name: convert(options_class, name, value, flag(name)) for name, value in values.items()})
        return namespace.verb, options_class(**merged)
    except UserError as err:
        raise UsageError(prog, str(err)) from err


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "ringan"
    try:
        verb, options = parse_command_line(argv)
        if verb is None:
            build_parser().print_help()
            return 0
        prog = f"ringan {verb}"
        VERBS[verb].run(options)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ReplicaStopped:  # a distributed run's main process has printed why it stopped
        return 2
    except (UserError, DialogueFormatError, OSError, ValueError) as err:  # OSError: missing, unreadable files
        if os.environ.get("RINGAN_DEBUG"):
            raise
        if _replica():  # in a distributed run the main process says it once for all
            return 2
        prog, message = (err.prog, err.message) if isinstance(err, UsageError) else (prog, str(err))
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    return 0


def _replica() -> bool:
    """Whether this is a process other than the main one of a `torchrun`/`accelerate launch` run."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and os.environ.get("RANK", "0") != "0"


if __name__ == "__main__":  # `python -m ringan.cli` (what torchrun runs)
    sys.exit(main())
