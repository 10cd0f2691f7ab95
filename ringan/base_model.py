"""Ringan-base: the pre-trained int8 model that ships inside the package, found by name (`base`) offline."""

from __future__ import annotations

import json
from pathlib import Path

BASE_NAME = "base"  # what --model / --init-from accept for it
BASE_DIR = Path(__file__).parent / "base"
INFO_FILE = "ringan_base.json"  # its held-out figures and the sample a test re-scores


def base_model_path() -> Path:
    """The folder of the shipped base model (config, int8 weights, tokenizer, card); loads with
    `AutoModelForCausalLM.from_pretrained(path)` after `import ringan`."""
    if not (BASE_DIR / "config.json").is_file():
        raise FileNotFoundError(f"{BASE_DIR}: the base model is not in this installation of ringan")
    return BASE_DIR


def base_model_info() -> dict:
    """What the base's card reports: parameters, size, held-out bits per byte per source."""
    return json.loads((base_model_path() / INFO_FILE).read_text(encoding="utf-8"))


def resolve_model_name(name: str | Path) -> Path:
    """`base` -> the shipped base's folder; anything else is a folder path."""
    return base_model_path() if str(name) == BASE_NAME else Path(name)
