"""What the verbs' options need to know before anything heavy is imported: the model's defaults and choices, read
from `modeling/configuration_ringan.py`'s source, and the decode runtimes.

`ringan --help` and `ringan VERB --help` build every verb's options without importing torch or transformers (a
second or more); the model's defaults stay defined once, in the configuration file that ships with checkpoints.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

RUNTIMES = ("auto", "torch", "onnx")  # the decode loops of `ringan.decoding`
CONFIGURATION_FILE = Path(__file__).parent / "modeling" / "configuration_ringan.py"


@functools.cache
def config_defaults() -> dict[str, Any]:
    """The module constants (`ATTENTION_TYPES`, ...) and `RinganConfig`'s field defaults, as literals, read from
    the configuration file without importing it."""
    tree = ast.parse(CONFIGURATION_FILE.read_text(encoding="utf-8"))
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # not a literal: nothing an option needs
        elif isinstance(node, ast.ClassDef) and node.name == "RinganConfig":
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
                    try:
                        found[item.target.id] = ast.literal_eval(item.value)
                    except ValueError:
                        pass
    return found


# a byte-level BPE holds the 256 bytes and the 4 special tokens whatever it is asked for: below that "at most N
# tokens" could not hold; above the maximum the embedding tables alone outgrow a laptop's memory
VOCAB_BOUNDS = {"minimum": 260, "maximum": 262_144}

# what `chat`/`generate`/`serve` talk about when a text-conditioned model (Ringan-base) is given no --topic/--context
DEFAULT_TOPIC = "Ngobrol Santai Sepulang Kerja"
DEFAULT_CONTEXT = (
    "Dua teman lama bertemu di warung kopi sepulang kerja dan ngobrol santai tentang kabar masing-masing, "
    "pekerjaan yang melelahkan minggu ini, dan rencana akhir pekan."
)

# how replies are sampled by default: `ringan generate`/`chat`'s options and the `generation_config.json` that
# `ringan train` saves (so plain `model.generate()` samples the same way)
SAMPLING_DEFAULTS = {"max_new_tokens": 120, "temperature": 0.8, "top_k": 50, "top_p": 0.95, "repetition_penalty": 1.1}
