"""Import a state_dict of the founding document's reference model (`MyGenerativeModel`, chapter 3) as a Ringan
warm start.

The reference model is `RichEmbedding` (`token_embed`, `topic_embed`, `context_embed`), an `nn.TransformerDecoder`
of post-norm `nn.TransformerDecoderLayer`s (`decoder_model`, softmax self-attention + cross-attention to the
embeddings + ReLU FFN, LayerNorms with bias) and `prediction_layer = nn.Linear(embed_dim, vocab_size)` with a
bias. Ringan keeps the embeddings and the head exactly; the projections of the decoder keep their weights where
the shapes agree, but they feed a different computation (pre-norm RMSNorm, RoPE, linear attention, no
cross-attention), so the result is a WARM START to fine-tune, not an equivalent model.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from ..modeling import RinganConfig, RinganForCausalLM
from .quantize import TOKENIZER_FILES

_LAYER = re.compile(r"^decoder_model\.layers\.(\d+)\.(.+)$")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
WARM_START_NOTE = (
    "Warm start converted from the founding document's MyGenerativeModel (softmax-attention placeholder): "
    "embeddings and the prediction layer are exact; decoder weights were reused where shapes agree but feed a "
    "different architecture. Fine-tune before use."
)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors safely: a .safetensors file, or `torch.load(weights_only=True)` (no pickled code runs)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):  # common checkpoint wrappers
            inner = state.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                state = inner
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state_dict of tensors")
    # strip DataParallel / torch.compile / wrapper prefixes, only when every key carries them
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _infer_config(state: dict[str, torch.Tensor], num_heads: int | None) -> tuple[dict, list[str]]:
    notes = []
    try:
        token = state["rich_embedding_layer.token_embed.weight"]
        topic = state["rich_embedding_layer.topic_embed.weight"]
        context = state["rich_embedding_layer.context_embed.weight"]
        head = state["prediction_layer.weight"]
    except KeyError as err:
        raise ValueError(f"not a MyGenerativeModel state_dict: missing {err.args[0]!r}") from None
    vocab, width = token.shape
    if head.shape != (vocab, width):
        raise ValueError(f"prediction_layer.weight is {tuple(head.shape)}, expected {(vocab, width)}")
    layers = sorted({int(m.group(1)) for k in state if (m := _LAYER.match(k))})
    num_layers = max(layers) + 1 if layers else 0
    if num_layers == 0:
        raise ValueError("no decoder_model.layers.* tensors found")
    ffn_key = "decoder_model.layers.0.linear1.weight"
    ffn = state[ffn_key].shape[0] if ffn_key in state else 4 * width
    if num_heads is None:
        # MultiheadAttention's packed in_proj does not encode the head count: use the document's 4
        num_heads = 4 if width % 4 == 0 else 1
        notes.append(f"num_heads is not stored in the weights; used {num_heads} (the founding document's value)")
    if width % num_heads:
        raise ValueError(f"embed_dim {width} is not divisible by num_heads {num_heads}")
    values = dict(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=ffn,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_topics=topic.shape[0],
        num_contexts=context.shape[0],
        hidden_act="relu",  # nn.TransformerDecoderLayer's default activation: keeps the FFN's function
    )
    notes.append("hidden_act='relu' (the reference FFN's activation) so the copied FFN computes the same function")
    return values, notes


def convert_seed_checkpoint(
    path: str | Path | dict,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    *,
    num_heads: int | None = None,
    attention_type: str = "retention",
    verbose: bool = True,
    source_name: str | None = None,
) -> dict:
    """Convert a state_dict of the founding document's `MyGenerativeModel` into a Ringan checkpoint (warm start).

    The file is read safely: `.safetensors`, or `torch.load(..., weights_only=True)` for anything else (plain
    `model.state_dict()` dumps, optionally wrapped in `{"state_dict": ...}` or prefixed `module.`/`_orig_mod.`).
    Sizes (vocab, width, layers, FFN, topic/context rows) are inferred from tensor shapes; the head count is not
    stored in the weights, so it is `num_heads` or the document's 4.

    Mapping (exact copies): `rich_embedding_layer.{token,topic,context}_embed.weight` ->
    `model.embed_tokens.weight`, `model.conditioning.embed_{topics,contexts}.weight`; `prediction_layer.weight` -> `lm_head.weight`. Reused where
    shapes agree: per layer, `self_attn.in_proj_weight` split into q/k/v -> `self_attn.{q,k,v}_proj.weight`,
    `self_attn.out_proj.weight` -> `o_proj`, `linear1.weight` -> `mlp.up_proj`, `linear2.weight` ->
    `mlp.down_proj` (config `hidden_act="relu"`, the reference FFN's activation). Not mapped (listed in the
    report): the cross-attention `multihead_attn.*`, the LayerNorms `norm1/2/3` (Ringan is pre-norm RMSNorm; its
    norms start at 1), every bias. The head's bias: Ringan's LM head has none. Its mean is irrelevant (softmax
    is shift-invariant); the centred part is dropped and its size reported (`head_bias`), so you can judge what
    fine-tuning must recover.

    Args:
        path: the `.pt`/`.pth`/`.bin`/`.safetensors` file, or its state_dict already read with `load_state_dict`.
        out_dir: the output folder (`save_pretrained` layout, README.md with the warm-start note and the report).
        tokenizer_dir: optional folder with the tokenizer files to copy beside the weights.
        num_heads: attention heads (default: the document's 4).
        attention_type: Ringan's attention form for the result.
        verbose: print the report.
        source_name: the file name recorded in the config (default: the name of `path`).

    Returns:
        `{"config": {...}, "mapped": [[source, target, shape]], "unmapped": {source: reason},
        "initialised": [Ringan tensors left at their initial values], "head_bias": {...} | None, "notes": [...],
        "out_dir": str}`.
    """
    out_dir = Path(out_dir)
    state = path if isinstance(path, dict) else load_state_dict(path)
    name = source_name or (Path(path).name if not isinstance(path, dict) else "state_dict")
    values, notes = _infer_config(state, num_heads)
    warm_start = {"source": "founding-document MyGenerativeModel", "file": name, "note": WARM_START_NOTE}
    # the founding document's form: id tables for topic/context, no convolution or output gate
    config = RinganConfig(
        attention_type=attention_type, conditioning="ids", conv_size=0, use_output_gate=False, **values
    )
    config.warm_start = warm_start  # saved in config.json: the checkpoint says what it is
    torch.manual_seed(0)
    model = RinganForCausalLM(config).eval()
    target = model.state_dict()

    mapped, unmapped, used = [], {}, set()

    def put(source: str, dest: str, tensor: torch.Tensor) -> None:
        if dest not in target:
            unmapped[source] = f"Ringan has no {dest}"
            return
        if tuple(target[dest].shape) != tuple(tensor.shape):
            unmapped[source] = f"shape {tuple(tensor.shape)} != Ringan {dest} {tuple(target[dest].shape)}"
            return
        with torch.no_grad():
            target[dest].copy_(tensor.to(target[dest].dtype))
        mapped.append([source, dest, list(tensor.shape)])
        used.add(dest)

    exact = {
        "rich_embedding_layer.token_embed.weight": "model.embed_tokens.weight",
        "rich_embedding_layer.topic_embed.weight": "model.conditioning.embed_topics.weight",
        "rich_embedding_layer.context_embed.weight": "model.conditioning.embed_contexts.weight",
        "prediction_layer.weight": "lm_head.weight",
    }
    for source, dest in exact.items():
        put(source, dest, state[source])

    per_layer = {
        "self_attn.out_proj.weight": "self_attn.o_proj.weight",
        "linear1.weight": "mlp.up_proj.weight",
        "linear2.weight": "mlp.down_proj.weight",
    }
    for key, tensor in state.items():
        if key in exact:
            continue
        match = _LAYER.match(key)
        if key == "prediction_layer.bias":
            unmapped[key] = "Ringan's LM head has no bias (see head_bias)"
        elif match is None:
            unmapped[key] = "not part of the reference architecture Ringan maps"
        else:
            i, rest = int(match.group(1)), match.group(2)
            prefix = f"model.layers.{i}."
            if rest == "self_attn.in_proj_weight":
                if tensor.shape[0] % 3:
                    unmapped[key] = f"in_proj_weight rows {tensor.shape[0]} are not 3 x width"
                    continue
                for name, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                    put(f"{key}[{name[0]}]", f"{prefix}self_attn.{name}.weight", part)
            elif rest in per_layer:
                put(key, prefix + per_layer[rest], tensor)
            elif rest.startswith("multihead_attn."):
                unmapped[key] = "cross-attention: Ringan is decoder-only with no memory input"
            elif re.match(r"norm\d\.", rest):
                unmapped[key] = "post-norm LayerNorm (with bias): Ringan uses pre-norm RMSNorm, initialised to 1"
            elif rest.endswith("bias"):
                unmapped[key] = "bias: Ringan's projections have none"
            else:
                unmapped[key] = "no Ringan counterpart"

    head_bias = None
    if "prediction_layer.bias" in state:
        bias = state["prediction_layer.bias"].float()
        centred = bias - bias.mean()
        head_bias = {
            "handled": "dropped; its mean is irrelevant to softmax, the centred part is lost",
            "mean": float(bias.mean()),
            "centred_std": float(centred.std()) if bias.numel() > 1 else 0.0,
            "centred_max_abs": float(centred.abs().max()),
        }

    model.load_state_dict(target)
    initialised = sorted(k for k in target if k not in used)
    model.save_pretrained(out_dir)
    copied = []
    if tokenizer_dir is not None:
        tokenizer_dir = Path(tokenizer_dir)
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copy2(tokenizer_dir / name, out_dir / name)
                copied.append(name)
        if not copied:
            notes.append(f"no tokenizer files found in {tokenizer_dir}")

    report = {
        "config": values | {"attention_type": attention_type},
        "mapped": mapped,
        "unmapped": unmapped,
        "initialised": initialised,
        "head_bias": head_bias,
        "notes": notes,
        "tokenizer_files": copied,
        "out_dir": str(out_dir),
    }
    (out_dir / "README.md").write_text(_readme(report), encoding="utf-8")
    if verbose:
        print(format_report(report))
    return report


def format_report(report: dict) -> str:
    """A readable text form of `convert_seed_checkpoint`'s report."""
    lines = ["Seed conversion (warm start: fine-tune before use)", f"  config: {report['config']}"]
    lines.append(f"  mapped ({len(report['mapped'])}):")
    lines += [f"    {src} -> {dst} {shape}" for src, dst, shape in report["mapped"]]
    lines.append(f"  not mapped ({len(report['unmapped'])}):")
    lines += [f"    {src}: {why}" for src, why in report["unmapped"].items()]
    lines.append(f"  Ringan tensors left at their initial values ({len(report['initialised'])}):")
    lines += [f"    {name}" for name in report["initialised"]]
    if report["head_bias"]:
        b = report["head_bias"]
        lines.append(
            f"  prediction_layer.bias: {b['handled']} (mean {b['mean']:.4g}, centred std {b['centred_std']:.4g}, "
            f"max |centred| {b['centred_max_abs']:.4g})"
        )
    lines += [f"  note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def _readme(report: dict) -> str:
    return (
        "# Ringan warm start from the founding document's reference model\n\n"
        f"{WARM_START_NOTE}\n\n```\n{format_report(report)}\n```\n"
    )


__all__ = ["WARM_START_NOTE", "convert_seed_checkpoint", "format_report"]
