"""Reading saved folders without trusting them: `config.json`, the weights, the tokenizer and a checkpoint's
pickled trainer state, each checked before use, with one line naming the file and what is wrong.

Nothing a folder ships is ever run: the model is built from the installed `RinganForCausalLM` (a folder whose
`config.json` is not a Ringan model, whatever its `auto_map` names, is refused), the tokenizer from the installed
`PreTrainedTokenizerFast` (a `tokenizer_config.json` asking for its own code is refused), and pickles are read
with `torch.load(weights_only=True)`, which refuses anything but tensors and plain containers.

`load_model` is what every verb, the server and the benchmarks use: a folder's files checked, then the model and
its tokenizer built from the installed classes. Nothing here imports torch before it is needed (a fast `--help`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .errors import UserError
from .files import readable_folder

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
TOPIC_CONTEXTS_FILE = "topic_contexts.json"  # topic -> a Konteks seen with it, for prompts that give no Konteks
CHECKPOINT_PICKLES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth", "rng_state_*.pth")
MAX_QUOTE = 200


def _short(text: object) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_QUOTE else text[: MAX_QUOTE - 1] + "…"


def read_json(path: str | Path, what: str = "JSON file") -> object:
    """The parsed content of a JSON file, or a `UserError` naming the file and where it breaks."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text {what} (not valid UTF-8)") from None
    try:
        return json.loads(text)
    except RecursionError:  # json's parser recurses once per nesting level
        raise UserError(f"{path}: not a valid {what} (nested too deeply)") from None
    except ValueError as err:
        where = f" at line {err.lineno} column {err.colno}" if hasattr(err, "lineno") else ""
        raise UserError(f"{path}: not a valid {what} ({getattr(err, 'msg', err)}{where})") from None


def read_model_config(folder: str | Path):
    """The `RinganConfig` of a saved folder, checked: valid JSON, a Ringan model, sizes and names that make sense."""
    from .modeling import RinganConfig

    path = Path(folder) / "config.json"
    data = read_json(path, "config.json")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of settings, got {type(data).__name__}")
    model_type = data.get("model_type")
    if model_type != RinganConfig.model_type:
        asks = (
            f"; its auto_map names code ({_short(data['auto_map'])}) that ringan never runs"
            if "auto_map" in data
            else ""
        )
        got = "no model_type" if model_type is None else f"model_type {_short(repr(model_type))}"
        raise UserError(f"{path}: not a Ringan model ({got}{asks})")
    for name in ("topic_names", "context_names"):
        names = data.get(name)
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise UserError(f"{path}: {name} must be a list of strings, got {_short(repr(names))}")
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = data.get(name)
        ids = value if isinstance(value, list) else [value]
        if not all(i is None or (isinstance(i, int) and not isinstance(i, bool) and i >= 0) for i in ids):
            raise UserError(f"{path}: {name} must be a token id, got {_short(repr(value))}")
    try:
        config = RinganConfig.from_dict({k: v for k, v in data.items() if k != "auto_map"})
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise UserError(f"{path}: {_short(err)}") from None
    for name, rows in (("topic_names", config.num_topics), ("context_names", config.num_contexts)):
        if len(getattr(config, name) or []) > rows:
            raise UserError(f"{path}: {name} has {len(getattr(config, name))} names for {rows} embedding rows")
    return config


def weight_shapes(path: str | Path, dtypes: dict[str, str] | None = None) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes a safetensors file holds (their dtypes, as safetensors names them, into
    `dtypes` when given); a damaged or truncated file is a `UserError`."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            if dtypes is not None:
                dtypes.update({k: f.get_slice(k).get_dtype() for k in f.keys()})
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # noqa: BLE001  (safetensors raises its own error type for every kind of damage)
        reason = _short(str(err).removeprefix("Error while deserializing header: "))
        raise UserError(f"{path}: not a complete safetensors file ({reason}); it is damaged or was cut short") from None


def check_weights(folder: str | Path, config) -> None:
    """The weights file holds exactly the tensors, of the shapes, that `config` describes."""
    import torch

    from .modeling import RinganForCausalLM

    path = Path(folder) / "model.safetensors"
    dtypes: dict[str, str] = {}
    found = weight_shapes(path, dtypes)
    try:
        with torch.device("meta"):
            state = RinganForCausalLM(config).state_dict()
        wanted = {k: tuple(v.shape) for k, v in state.items()}
    except (ValueError, TypeError, KeyError) as err:  # e.g. a quantization scheme the model does not know
        raise UserError(f"{Path(folder) / 'config.json'}: {_short(err)}") from None
    missing = [k for k in wanted if k not in found]
    other = [k for k in wanted if k in found and found[k] != wanted[k]]
    unexpected = [k for k in found if k not in wanted]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if other:
        k = other[0]
        problems.append(
            f"{len(other)} of another shape (e.g. {k}: {list(found[k])}, config.json says {list(wanted[k])})"
        )
    if unexpected:
        problems.append(f"{len(unexpected)} tensors config.json does not describe (e.g. {unexpected[0]})")
    # an integer tensor where the model holds floats (or the reverse) loads without complaint and gives garbage
    kinds = [k for k in wanted if k in dtypes and dtypes[k].startswith(("F", "BF")) != state[k].is_floating_point()]
    if kinds:
        k = kinds[0]
        problems.append(
            f"{len(kinds)} of another kind of number (e.g. {k}: {dtypes[k]}, the model holds {state[k].dtype})"
        )
    if problems:
        raise UserError(f"{path}: does not match config.json: {'; '.join(problems)}")


def load_weights(folder: str | Path, config):
    """A `RinganForCausalLM` with the folder's weights (the installed class; call `check_weights` first)."""
    import torch

    from .modeling import RinganForCausalLM

    try:
        model = RinganForCausalLM.from_pretrained(str(folder), config=config)
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(f"{Path(folder) / 'model.safetensors'}: cannot be loaded ({_short(err)})") from None
    for name, param in model.named_parameters():  # NaN weights would only surface as NaN probabilities
        if param.is_floating_point() and not torch.isfinite(param.detach()).all():
            raise UserError(f"{Path(folder) / 'model.safetensors'}: {name} holds NaN or infinite values")
    return model


def read_tokenizer(folder: str | Path):
    """The tokenizer saved in `folder`, with the installed tokenizer class; a file that is not a tokenizer, or a
    `tokenizer_config.json` that asks for other code, is a `UserError`."""
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        config = read_json(config_path, "tokenizer_config.json")
        if not isinstance(config, dict):
            raise UserError(f"{config_path}: expected a JSON object of settings, got {type(config).__name__}")
        if "auto_map" in config:
            raise UserError(
                f"{config_path}: asks for tokenizer code of its own (auto_map {_short(config['auto_map'])}); ringan "
                "never runs code from a folder: use a tokenizer saved by ringan"
            )
    data = read_json(folder / "tokenizer.json", "tokenizer.json")
    if not isinstance(data, dict) or "model" not in data:
        raise UserError(f"{folder / 'tokenizer.json'}: not a tokenizer file (no 'model' section)")
    try:
        tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
    except Exception as err:  # noqa: BLE001  (the tokenizers library raises a bare Exception for a bad file)
        raise UserError(f"{folder / 'tokenizer.json'}: not a usable tokenizer ({_short(err)})") from None
    for role in ("pad", "bos", "eos"):
        if getattr(tok, f"{role}_token_id") is None:
            raise UserError(f"{folder}: the tokenizer has no {role} token (a ringan tokenizer has <pad>, <s>, </s>)")
    return tok


def check_checkpoint(checkpoint: str | Path) -> None:
    """A checkpoint to resume from: its trainer state parses, its weights are whole, and every pickle in it loads
    with `weights_only=True` (a pickle that would run code, or a damaged one, is refused before the Trainer sees
    it)."""
    import torch
    from transformers.trainer_pt_utils import safe_globals

    checkpoint = Path(checkpoint)
    state = read_json(checkpoint / "trainer_state.json", "trainer state")
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        raise UserError(f"{checkpoint / 'trainer_state.json'}: not a trainer state (no global_step)")
    if (checkpoint / "model.safetensors").is_file():
        weight_shapes(checkpoint / "model.safetensors")
    files = sorted({p for pattern in CHECKPOINT_PICKLES for p in checkpoint.glob(pattern)})
    for path in files:
        try:
            with safe_globals():
                torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001
            raise unreadable_pickle(path, err, "checkpoint file") from None


def unreadable_pickle(path: Path, err: Exception, what: str) -> UserError:
    """The error for a file `torch.load(weights_only=True)` refused: one that names code to run (a GLOBAL outside
    the tensors-and-plain-data allowlist) is refused as such; anything else is a damaged file."""
    import re

    text = " ".join(str(err).split())
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return UserError(
            f"{path}: refused: it holds a pickled call to {found.group(1)}, code that would run on loading (only "
            "tensors and plain data are loaded)"
        )
    return UserError(f"{path}: not a readable {what} ({_short(text)}); it is damaged or cut short")


# ------------------------------------------------------------------------------------- a whole model folder


def load_tokenizer(folder: str | Path):
    """A saved tokenizer (the installed tokenizer class; no code from the folder), or a one-line error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such tokenizer folder")
    if not (folder / "tokenizer.json").is_file():
        raise UserError(f"{folder}: no tokenizer.json here (train one with `ringan tokenizer`)")
    return read_tokenizer(folder)


def check_model_folder(folder: str | Path) -> Path:
    """The folder to read a saved model from (the complete copy a stopped save left, if `folder` is gone), with
    its files present."""
    requested = Path(folder)
    folder = readable_folder(requested)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "no such model folder"
        raise UserError(f"{requested}: {what}")
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{folder}: model folder is missing {', '.join(missing)} (was it saved by `ringan train`?)")
    return folder


def check_saved_model(folder: str | Path):
    """Every file of a saved model checked, without loading its weights: `(folder, config, tokenizer)`. `folder`
    is where to read it (the complete copy a stopped save left, if the folder itself is gone)."""
    folder = check_model_folder(folder)
    config = read_model_config(folder)
    if (folder / "generation_config.json").is_file():
        read_json(folder / "generation_config.json", "generation_config.json")
    tokenizer = load_tokenizer(folder)
    if len(tokenizer) > config.vocab_size:
        raise UserError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
            f"{config.vocab_size}: they do not belong together"
        )
    check_weights(folder, config)
    return folder, config, tokenizer


def load_model(folder: str | Path, for_training: bool = False):
    """A saved Ringan model and its tokenizer, every file checked, with the installed classes only (code a folder
    ships is never run). `for_training`: a quantized model comes back as trainable float weights."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep generated text and tables clean
    folder, config, tokenizer = check_saved_model(folder)
    model = load_weights(folder, config)
    if for_training and model.config.quantization:
        from .modeling.quantization import dequantize_model_

        scheme = model.config.quantization
        dequantize_model_(model)  # every weight trainable again, in fp32
        print(f"(loaded {folder} dequantized from int{scheme['bits']} to fp32 for training)", file=sys.stderr)
    model.train(for_training)
    return model, tokenizer
