"""The errors a user can fix: the CLI prints them as one line and exits with status 2, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user asked for: shown as one line, no traceback."""


class OptionError(UserError, ValueError):
    """A bad option value or name; `str()` is `<where>: <what was expected>, got <value>`.

    Args:
        where: how the user spelt the option: `--max-length` on the command line, `train.yaml: max_length` in a
            config file, `max_length` from Python.
        expected: what a valid value looks like, e.g. `"expected an integer >= 2"`.
        got: the value as given (`repr` for text), or `None` when there is no value to show.
    """

    def __init__(self, where: str, expected: str, got: str | None = None):
        self.where, self.expected, self.got = where, expected, got
        super().__init__(f"{where}: {expected}" + (f", got {got}" if got is not None else ""))


class ReplicaStopped(UserError):
    """A process of a distributed run stops because the main process stopped with an error it has printed."""
