"""Topic and Konteks vocabularies: each distinct name gets an integer id, and id 0 stands for "unknown"."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

UNKNOWN = "<unk>"


@dataclass
class LabelVocab:
    """Maps each distinct topic (or Konteks) to an integer id; id 0 is reserved for "unknown"."""

    names: list[str]

    def __post_init__(self) -> None:
        if not self.names or self.names[0] != UNKNOWN:
            self.names = [UNKNOWN, *[n for n in self.names if n != UNKNOWN]]
        self._index = {name: i for i, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def id(self, name: str | None) -> int:
        """The id of `name`, or 0 (unknown) for a name the vocabulary does not hold."""
        return self._index.get(name, 0) if name is not None else 0

    @classmethod
    def build(
        cls, values: Sequence[str], max_size: int, what: str = "topics", on_overflow: str = "error"
    ) -> LabelVocab:
        """Build from the values of the data, keeping at most `max_size` rows (row 0 included).

        When the data holds more distinct values than fit, `on_overflow="error"` (the default) raises a
        message saying how many there are and how to fix it; `"unknown"` keeps the most frequent ones (ties:
        first seen) and maps the rest to id 0, saying so with a warning.
        """
        counts = Counter(values)
        distinct = list(dict.fromkeys(values))
        if len(distinct) + 1 > max_size:
            message = (
                f"the data holds {len(distinct)} distinct {what} but the model has {max_size} rows "
                f"({max_size - 1} after row 0 = unknown)"
            )
            if on_overflow == "error":
                raise ValueError(
                    f"{message}: raise num_{what} to at least {len(distinct) + 1}, or map the rest to unknown"
                )
            if on_overflow != "unknown":
                raise ValueError(f"on_overflow must be 'error' or 'unknown', got {on_overflow!r}")
            order = {name: i for i, name in enumerate(distinct)}
            distinct = sorted(distinct, key=lambda n: (-counts[n], order[n]))[: max_size - 1]
            kept = set(distinct)
            dropped = sum(c for n, c in counts.items() if n not in kept)
            warnings.warn(
                f"{message}: the {max_size - 1} most frequent keep an id, {dropped} entries use id 0 (unknown)",
                stacklevel=2,
            )
            distinct.sort(key=order.__getitem__)
        return cls([UNKNOWN, *distinct])

    def to_json(self) -> str:
        return json.dumps(self.names, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> LabelVocab:
        return cls(json.loads(text))
