"""Fast generation outside `model.generate()`: prefill, then one lean step per token, sampling done here.

Ringan's state has a fixed size, so a decode step is a handful of small matmuls; at that size the framework,
not the arithmetic, sets the pace (transformers' `generate` loop alone costs ~1.5 ms a step). `Decoder` keeps
the loop to the model's own one-token forward and a few tensor ops, for a batch of left-padded prompts at once;
rows that finish drop out of the batch. Two back ends do the forward:

- `"torch"`: the model itself (its one-token step fused for the delta-rule mixers); float or int8/int4 weights;
- `"onnx"`: the `ringan export onnx` graphs in ONNX Runtime (batch 1), exported once into a cache folder.

`model.generate()` stays fully supported; this module is what `ringan generate` / `ringan chat` use.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .defaults import RUNTIMES
from .modeling.fused_step import FUSED_MIXERS

# bumped whenever `export_onnx` writes different graphs, so an export cached by an older version is redone
ONNX_EXPORT_REVISION = 3


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen (as `generate()`'s `do_sample`, `temperature`, `top_k`, `top_p`,
    `repetition_penalty`): greedy when `greedy`, else a draw from the warped distribution."""

    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0


def next_tokens(
    logits: torch.Tensor, sampling: Sampling, seen: torch.Tensor | None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`[B, V]` logits -> `[B]` token ids. `seen` `[B, V]` bool marks the tokens of each row so far (prompt and
    generated), penalised as transformers' `RepetitionPenaltyLogitsProcessor` does."""
    logits = logits.float()
    if sampling.repetition_penalty != 1.0 and seen is not None:
        penalised = torch.where(logits > 0, logits / sampling.repetition_penalty, logits * sampling.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if sampling.greedy:
        if logits.device.type == "cpu":  # numpy's argmax: 0.6 µs at [1, 10000] against torch's 13 µs (1 thread)
            return torch.from_numpy(logits.numpy().argmax(-1))
        return logits.argmax(-1)
    logits = logits / sampling.temperature
    if 0 < sampling.top_k < logits.shape[-1]:
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(logits, dim=-1, descending=False)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative <= 1 - sampling.top_p  # the low tail whose mass is at most 1 - top_p
        drop[:, -1] = False  # the most likely token always stays
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def conditioning_batch(model, tok, rows: Sequence[tuple[str | None, int, str | None, int]]) -> dict:
    """The topic/Konteks inputs the model's `config.conditioning` takes, for a batch of conversations, each given as
    `(Topik text, topic id, Konteks text, context id)`: the ids (`"ids"`), or the texts' tokens padded across rows
    with their masks (`"text"`; a row of padding only has no topic or Konteks). The one builder of these inputs:
    generation, batches, chat and the server use it; training's collator pads the same tokens."""
    mode = getattr(model.config, "conditioning", "ids")
    if mode == "ids":
        return {"topic_ids": torch.tensor([r[1] for r in rows]), "context_ids": torch.tensor([r[3] for r in rows])}
    if mode != "text":
        return {}
    from .training import conditioning_tokens  # training's imports are heavier than a decode loop needs

    lists = [conditioning_tokens(tok, topic, context) for topic, _, context, _ in rows]
    inputs = {}
    for k, name in enumerate(("topic", "context")):
        width = max(len(x[k]) for x in lists)
        if not width:
            continue
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, x in enumerate(lists):
            ids[i, : len(x[k])] = torch.tensor(x[k], dtype=torch.long)
            mask[i, : len(x[k])] = 1
        inputs[f"{name}_input_ids"], inputs[f"{name}_attention_mask"] = ids, mask
    return inputs


def conditioning_inputs(model, tok, topic: str | None, topic_id: int, context: str | None, context_id: int) -> dict:
    """`conditioning_batch` for one conversation."""
    return conditioning_batch(model, tok, [(topic, topic_id, context, context_id)])


class TorchStep:
    """The model's own forward, one token per row, carrying a `RinganCache` (for the delta-rule mixers, the
    default, the forward runs a one-token step as `FusedDeltaStep`)."""

    name = "torch"

    def __init__(self, model):
        self.model = model.eval()

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, conditioning: dict, state=None):
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=state,
            use_cache=True,
            logits_to_keep=1,
            **conditioning,
        )
        return out.logits[:, -1], out.cache

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, cache):
        return self.model(input_ids=tokens[:, None], cache=cache, use_cache=True).logits[:, -1], cache

    @staticmethod
    def keep_rows(cache, rows: torch.Tensor):
        cache.batch_select_indices(rows)
        return cache


def plain_conditioning(conditioning: dict) -> dict:
    """Batch-1 conditioning tensors as `OnnxRingan.set_conditioning` takes them: ids as ints, token lists (and their
    masks) as lists."""
    return {k: v[0].tolist() if v.dim() > 1 else int(v[0]) for k, v in conditioning.items()}


class OnnxStep:
    """The exported prefill/decode graphs in ONNX Runtime (batch 1)."""

    name = "onnx"

    def __init__(self, folder: str | Path, threads: int | None = None):
        from .conversion.onnx_runtime import OnnxRingan

        self.runner = OnnxRingan(folder, threads=threads)

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, conditioning: dict, state=None):
        """`state`: continue a conversation from the state it left (its conditioning stays unless new inputs are
        given)."""
        if input_ids.shape[0] != 1:
            raise ValueError("the ONNX runtime decodes one conversation at a time (batch 1)")
        if state is None or conditioning:
            # batch 1: ids as ints, token lists (and their masks) as lists
            self.runner.set_conditioning(**plain_conditioning(conditioning))
        ids = input_ids[0][attention_mask[0].bool()] if attention_mask is not None else input_ids[0]
        logits, state = self.runner.feed(ids.tolist(), self.runner.initial_state() if state is None else state)
        return torch.from_numpy(logits)[None], state

    def step(self, tokens: torch.Tensor, state):
        logits, state = self.runner.feed([int(tokens[0])], state)
        return torch.from_numpy(logits)[None], state

    @staticmethod
    def keep_rows(state, rows: torch.Tensor):
        return state  # batch 1: the only row is kept until it finishes


class Decoder:
    """Generate continuations for a batch of token-id prompts with a back end (`TorchStep` or `OnnxStep`).

    Example:
        >>> decoder = Decoder(TorchStep(model), stop_ids={tokenizer.eos_token_id})
        >>> out = decoder.generate([tokenizer("Halo")["input_ids"]], max_new_tokens=20, sampling=Sampling(greedy=True))
    """

    def __init__(self, backend, stop_ids: Sequence[int] = (), pad_token_id: int = 0, vocab_size: int | None = None):
        self.backend = backend
        self.stop_ids = frozenset(int(i) for i in stop_ids)
        self.pad_token_id = pad_token_id
        self.vocab_size = vocab_size
        self.state = None  # the state after the last call (batch 1: what a conversation continues from)

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        sampling: Sampling = Sampling(),
        conditioning: dict | None = None,
        seed: int | None = None,
        on_step: Callable[[list[int], list[int]], None] | None = None,
        state=None,
    ) -> list[list[int]]:
        """The new tokens of each prompt (the stop token that ended a row included). `conditioning`: the model's
        conditioning inputs for the whole batch (e.g. `context_input_ids` `[B, L]`). `on_step(rows, tokens)` is
        called after every step with the original indices of the rows still running and their new tokens.
        `state`: continue a conversation (batch 1) from the state it left, feeding only `prompts`' new tokens;
        afterwards `self.state` holds the state, which has seen every token but the last one generated."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        width = max(len(p) for p in prompts)
        batch = len(prompts)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: padding takes no state and no position
            input_ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = 1
        conditioning = dict(conditioning or {})
        if state is not None and batch != 1:
            raise ValueError("a conversation continues from its state one at a time (batch 1)")
        logits, state = self.backend.prefill(input_ids, mask if not bool(mask.all()) else None, conditioning, state)
        vocab = self.vocab_size or logits.shape[-1]
        seen = None
        if sampling.repetition_penalty != 1.0:
            seen = torch.zeros(batch, logits.shape[-1], dtype=torch.bool)
            seen.scatter_(1, input_ids.clamp(max=logits.shape[-1] - 1), mask.bool())
        rows = list(range(batch))  # the original index of each row still running
        outputs: list[list[int]] = [[] for _ in prompts]
        for step in range(max_new_tokens):  # per-step bookkeeping in plain Python: a torch op costs microseconds
            tokens = next_tokens(logits[:, :vocab], sampling, seen, generator)
            new = tokens.tolist()
            for row, token in zip(rows, new):
                outputs[row].append(token)
            if on_step is not None:
                on_step(rows, new)
            if seen is not None:
                seen[torch.arange(len(rows)), tokens] = True
            keep = [i for i, token in enumerate(new) if token not in self.stop_ids]
            if step == max_new_tokens - 1 or not keep:
                self.state = state
                break
            if len(keep) < len(rows):  # finished rows leave the batch
                index = torch.tensor(keep)
                rows, tokens = [rows[i] for i in keep], tokens[index]
                state = self.backend.keep_rows(state, index)
                seen = seen[index] if seen is not None else None
            logits, state = self.backend.step(tokens, state)
        return outputs


def onnx_cache_folder(model_dir: str | Path, quantize: str | None) -> Path:
    """Where the ONNX export of a model folder is kept: keyed by the weights' content, so a retrained model gets
    a new export (`RINGAN_CACHE` overrides `~/.cache/ringan`)."""
    weights = Path(model_dir) / "model.safetensors"
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    root = Path(os.environ.get("RINGAN_CACHE", Path.home() / ".cache" / "ringan"))
    return root / "onnx" / f"{digest.hexdigest()[:16]}-{quantize or 'fp32'}-r{ONNX_EXPORT_REVISION}"


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def make_backend(model, model_dir: str | Path | None, runtime: str = "auto", threads: int | None = None):
    """The decode back end for `runtime`. `auto`: ONNX Runtime (the fastest at batch 1) when it is installed and
    the model has a folder, exporting the model once into the cache (≈ 10–20 s; later runs reuse it) and falling
    back to torch if that export fails; else torch. Returns `(backend, description)`."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "onnx" and not onnx_available():
        raise ImportError("the ONNX runtime needs onnxruntime and onnxscript: pip install 'ringan[export]'")
    bits = (model.config.quantization or {}).get("bits")
    quantize = {8: "int8", 4: "int4"}.get(bits)  # the ONNX graphs keep the checkpoint's weight format
    how = "fused delta-rule step" if model.config.attention_type in FUSED_MIXERS else "the model's forward"
    torch_description = f"torch ({how}, {f'int{bits}' if bits else 'fp32'} weights"
    if runtime == "torch" or (runtime == "auto" and (model_dir is None or not onnx_available())):
        hint = ""
        if runtime == "auto" and model_dir is not None:
            hint = "; pip install 'ringan[export]' decodes faster through ONNX Runtime"
        return TorchStep(model), f"{torch_description}{hint})"
    from .conversion.onnx_export import export_onnx
    from .conversion.onnx_runtime import META_FILE

    folder = onnx_cache_folder(model_dir, quantize)
    if not (folder / META_FILE).is_file():
        print(f"(exporting the model to ONNX once, into {folder}; later runs reuse it)", file=sys.stderr, flush=True)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        try:
            export_onnx(model_dir, tmp, quantize)
        except Exception as err:  # auto: any failure of the export leaves the torch path, said plainly
            shutil.rmtree(tmp, ignore_errors=True)
            if runtime == "onnx":
                raise
            return TorchStep(model), f"{torch_description}; the ONNX export failed: {type(err).__name__}: {err})"
        os.replace(tmp, folder)
    return OnnxStep(folder, threads), f"onnx ({quantize or 'fp32'}, {folder})"
