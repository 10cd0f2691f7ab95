"""Generation with ONNX Runtime from a folder written by `export_onnx`: `OnnxRingan` (sessions, conditioning, the
recurrent state as arrays) and `onnx_generate` (greedy, text or ids). Imports neither torch nor onnx at module level: a server that
only runs an export needs `onnxruntime`, `numpy` and a tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

META_FILE = "ringan_onnx.json"


class OnnxRingan:
    """Generation with ONNX Runtime from a folder written by `export_onnx` (batch size 1).

    Keep one instance to reuse its sessions; `onnx_generate` builds one per call. `set_conditioning(...)` takes
    the same conditioning inputs as the model's forward (`topic_ids` / `context_ids`, or `topic_input_ids` /
    `context_input_ids` token lists) and holds the vector until changed.
    """

    def __init__(self, out_dir: str | Path, threads: int | None = None):
        import onnxruntime as ort

        self.out_dir = out_dir = Path(out_dir)
        self.meta = json.loads((out_dir / META_FILE).read_text())
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.prefill_session = ort.InferenceSession(str(out_dir / "prefill.onnx"), options, providers=providers)
        self.decode_session = ort.InferenceSession(str(out_dir / "decode.onnx"), options, providers=providers)
        self.condition_session = None
        if (out_dir / "condition.onnx").is_file():
            self.condition_session = ort.InferenceSession(str(out_dir / "condition.onnx"), options, providers=providers)
        self.set_conditioning()  # none given: "unknown" for ids, nothing for text

    def set_conditioning(self, **inputs) -> None:
        """The conversation's topic/context (the model's conditioning inputs, batch 1); nothing given = none."""
        import numpy as np

        names = self.meta["condition_inputs"]
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: this export takes {names or 'no conditioning'}")
        given = {k: v for k, v in inputs.items() if v is not None}
        if self.condition_session is None or (not given and self.meta["conditioning"] != "ids"):
            self.condition = np.zeros((1, 1, self.meta["hidden_size"]), dtype=np.float32)
            return
        feeds = {}
        for name in names:
            if self.meta["conditioning"] == "ids":
                feeds[name] = np.asarray([int(given.get(name, 0))], dtype=np.int64)
            elif name.endswith("_input_ids"):
                ids = np.asarray(given.get(name, []), dtype=np.int64).reshape(-1)
                mask_name = name.replace("_input_ids", "_attention_mask")
                mask = np.asarray(given.get(mask_name, np.ones_like(ids)), dtype=np.int64).reshape(-1)
                if ids.size == 0:  # "no topic": one masked token
                    ids, mask = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
                feeds[name], feeds[mask_name] = ids[None], mask[None]
        self.condition = self.condition_session.run(None, feeds)[0].astype(np.float32)

    def initial_state(self) -> dict:
        """Zero states at position 0 (a fresh conversation)."""
        import numpy as np

        layers = self.meta["num_hidden_layers"]
        state = {"position": np.zeros(1, dtype=np.int64)}
        for name, shape in self.meta["state_shapes"].items():
            state[name] = np.zeros((layers, *shape), dtype=np.float32)
        return state

    def _run(self, session, ids: list[int], state: dict):
        import numpy as np

        feeds = {"input_ids": np.asarray([ids], dtype=np.int64), "condition": self.condition, **state}
        out = session.run(None, feeds)
        new_state = {name.replace("_out", ""): value for name, value in zip(self.meta["outputs"][1:], out[1:])}
        return out[0][0], new_state

    def feed(self, ids: list[int], state: dict):
        """Run `ids` (tokens the state has not seen) and return `(last logits [vocab] np.float32, new state)`:
        one token goes through `decode.onnx`, more through `prefill.onnx` a window at a time."""
        if not ids:
            raise ValueError("feed needs at least one token")
        if len(ids) == 1:
            return self._run(self.decode_session, ids, state)
        window = max(int(self.meta["prefill_window"]), 1)
        for start in range(0, len(ids), window):
            logits, state = self._run(self.prefill_session, ids[start : start + window], state)
        return logits, state

    def generate(self, input_ids, max_new_tokens: int, stop_at_eos: bool = True, **conditioning) -> list[int]:
        """Greedy generation; returns the prompt's ids followed by the generated ones (a list of ints), like a row
        of `model.generate(..., do_sample=False)`. It stops at the end of the turn (`</s>` or a newline token, as
        the saved generation config says) unless `stop_at_eos=False`. `conditioning`: as `set_conditioning`."""
        import numpy as np

        prompt = np.asarray(input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids, dtype=np.int64)
        tokens = prompt.reshape(-1).tolist()
        if not tokens:
            raise ValueError("the prompt is empty")
        self.set_conditioning(**conditioning)  # none given: no (or "unknown") topic and context
        stops = set(self.meta["end_of_turn_ids"]) if stop_at_eos else set()
        if max_new_tokens <= 0:
            return tokens
        logits, state = self.feed(tokens, self.initial_state())
        for i in range(max_new_tokens):
            nxt = int(logits.argmax())
            tokens.append(nxt)
            if nxt in stops or i == max_new_tokens - 1:
                break
            logits, state = self.feed([nxt], state)
        return tokens


def onnx_generate(
    out_dir: str | Path | OnnxRingan,
    prompt,
    max_new_tokens: int,
    stop_at_eos: bool = True,
    **conditioning,
) -> str | list[int]:
    """Greedy generation with ONNX Runtime from an `export_onnx` folder (or a ready `OnnxRingan`).

    Args:
        out_dir: the folder `export_onnx` wrote, or an `OnnxRingan` to reuse its sessions.
        prompt: text (tokenized with the folder's tokenizer), or ids: a list, or an array/tensor of shape `[T]`
            or `[1, T]`.
        max_new_tokens: tokens to generate at most.
        stop_at_eos: stop at the end of the turn (`</s>` or a newline token), as `model.generate` does with the
            saved generation config.
        conditioning: the model's conditioning inputs for batch 1, e.g. `topic_ids=2, context_ids=3`
            (`conditioning="ids"`) or `topic_input_ids=[...]`, `context_input_ids=[...]` (`conditioning="text"`).

    Returns:
        for a text prompt, the generated text (the reply, without the prompt); for ids, the prompt's ids followed
        by the generated ones.
    """
    runner = out_dir if isinstance(out_dir, OnnxRingan) else OnnxRingan(out_dir)
    if not isinstance(prompt, str):
        return runner.generate(prompt, max_new_tokens, stop_at_eos, **conditioning)
    from transformers import AutoTokenizer

    from ..tokenization import encode_text

    tokenizer = AutoTokenizer.from_pretrained(runner.out_dir)
    ids = encode_text(tokenizer, prompt, add_special_tokens=False)["input_ids"]
    tokens = runner.generate(ids, max_new_tokens, stop_at_eos, **conditioning)
    return tokenizer.decode(tokens[len(ids) :], skip_special_tokens=True).strip()


__all__ = ["META_FILE", "OnnxRingan", "onnx_generate"]
