"""Ringan: a small, fast, long-context language model for curated Indonesian dialogue, on the HF stack.

The package is light to import: the model classes (and torch and transformers with them) load when a name below is
first used, so `ringan --help` answers at once. The auto classes are registered with transformers as soon as both
are loaded, whichever comes first: `import ringan` then `AutoModelForCausalLM.from_pretrained(...)` works.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

__version__ = "0.1.0"

_MODELING = ("RinganCache", "RinganConfig", "RinganForCausalLM", "RinganModel", "RinganPreTrainedModel")

__all__ = [*_MODELING, "__version__", "base_model_path"]


def _register() -> None:
    """Register the auto classes: importing `ringan.modeling` does it (a module already importing finishes it)."""
    if "ringan.modeling" not in sys.modules:
        importlib.import_module(".modeling", __name__)


class _RegisterAfterTransformers(importlib.abc.MetaPathFinder):
    """Registers the auto classes right after `transformers` finishes importing, for code that imports ringan
    first; removes itself once done."""

    def find_spec(self, name, path=None, target=None):
        if name != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module):
            original(module)
            _register()

        loader.exec_module = exec_module
        return spec


if "transformers" in sys.modules:
    _register()
else:
    sys.meta_path.insert(0, _RegisterAfterTransformers())


def __getattr__(name: str) -> Any:
    if name in _MODELING:
        return getattr(importlib.import_module(".modeling", __name__), name)
    if name == "base_model_path":
        from .base_model import base_model_path

        return base_model_path
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
