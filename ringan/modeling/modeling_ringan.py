"""Ringan: a tiny decoder-only language model with topic/context embeddings, RoPE and linear attention.

Layout (as in transformers' model files): MLP, decoder layer, cache, outputs, PreTrainedModel, Model,
ForCausalLM; the sequence mixers live in `mixer_*.py`, their kernels in `ops_*.py`, shared blocks in `modules.py`. This file ships beside every checkpoint
(`trust_remote_code=True`), so it imports only torch, transformers' public names and its siblings.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, GradientCheckpointingLayer, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_ringan import RinganConfig
from .fused_step import FUSED_MIXERS, FusedDeltaStep, weights_key
from .mixer_delta import RinganDeltaNet
from .mixer_linear import RinganLinearAttention
from .modules import RinganRMSNorm, RinganRotaryEmbedding, RinganShortConvolution
from .quantization import QUANTIZED_MODULES, QuantizedEmbedding, dequantize_model_, replace_with_quantized_

CONDITION_GAIN = 0.1  # text-conditioning vectors start at this share of the token embeddings' scale
MIXERS = {
    "linear": RinganLinearAttention,
    "retention": RinganLinearAttention,
    "gated": RinganLinearAttention,
    "delta": RinganDeltaNet,
    "gated_delta": RinganDeltaNet,
}


class RinganMLP(nn.Module):
    """`down(act(up(x)))`, or with `gated_mlp` the GLU form `down(act(gate(x)) * up(x))` (SwiGLU with silu)."""

    def __init__(self, config: RinganConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.gate_proj = (
            nn.Linear(config.hidden_size, config.intermediate_size, bias=False) if config.gated_mlp else None
        )
        self.act = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is not None:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act(self.up_proj(x)))


class RinganDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: RinganConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RinganRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = MIXERS[config.attention_type](config, layer_idx)
        self.post_attention_layernorm = RinganRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = RinganMLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states, cos, sin, token_mask=None, state=None):
        attn_out, new_state = self.self_attn(self.input_layernorm(hidden_states), cos, sin, token_mask, state)
        hidden_states = hidden_states + self.dropout(attn_out)
        hidden_states = hidden_states + self.dropout(self.mlp(self.post_attention_layernorm(hidden_states)))
        return hidden_states, new_state


class RinganCache:
    """Fixed-size recurrent cache: per layer a dict of state tensors (the mixer's `state` `[B, H, d, d]` fp32,
    and as the mixer needs them `normalizer` `[B, H, d]` and `conv` `[B, 3 * hidden, conv_size - 1]`) and, per
    row, the number of real (unpadded) tokens seen, which is the next RoPE position.

    To continue from a returned cache, pass only the tokens the cache has not seen yet. Padding is for the left of a
    row, before its first token; a row that read padding after a token (a right-padded batch) keeps a state that is
    not its tokens' alone (the short convolution's window holds the padding), so continuing it is refused.
    """

    is_compileable = False
    is_croppable = False

    def __init__(self, num_layers: int, batch_size: int, device: torch.device | str | None = None):
        self.states: list[dict[str, torch.Tensor] | None] = [None] * num_layers
        self.seen_tokens = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.condition: torch.Tensor | None = None  # [B, 1, hidden]: the conversation's topic + context vector
        self.padded_rows = torch.zeros(batch_size, dtype=torch.bool, device=device)  # read padding after a token

    @property
    def is_linear(self) -> list[bool]:
        return [True] * len(self.states)

    def __len__(self) -> int:
        return len(self.states)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return int(self.seen_tokens.max()) if self.seen_tokens.numel() else 0

    def _map(self, fn) -> None:
        self.states = [None if s is None else {k: fn(t) for k, t in s.items()} for s in self.states]
        self.seen_tokens = fn(self.seen_tokens)
        self.padded_rows = fn(self.padded_rows)
        self.condition = None if self.condition is None else fn(self.condition)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map(lambda t: t[indices])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def check_fits(self, config, batch: int) -> None:
        """A cache made by another model (other sizes, layers or mixer) or for another batch is refused here, in
        one line naming the tensor, rather than deep inside a matmul (or, worse, continued with the wrong state)."""
        if len(self.states) != config.num_hidden_layers:
            raise ValueError(f"the cache holds {len(self.states)} layers but the model has {config.num_hidden_layers}")
        if self.seen_tokens.shape[0] != batch:
            raise ValueError(f"the cache holds {self.seen_tokens.shape[0]} rows but the input has {batch}")
        heads, dim = config.num_attention_heads, config.head_dim
        expected = {"state": (batch, heads, dim, dim)}
        if config.attention_type == "linear":
            expected["normalizer"] = (batch, heads, dim)
        if config.conv_size:
            expected["conv"] = (batch, 3 * config.hidden_size, config.conv_size - 1)
        if self.condition is not None and self.condition.shape[-1] != config.hidden_size:
            raise ValueError(f"cache condition: width {self.condition.shape[-1]}, expected {config.hidden_size}")
        for i, layer_state in enumerate(self.states):
            for name, tensor in (layer_state or {}).items():
                if name not in expected or tuple(tensor.shape) != expected[name]:
                    want = expected.get(name, "no such tensor for this model")
                    raise ValueError(f"cache layers.{i}.{name}: shape {tuple(tensor.shape)}, expected {want}")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors (for safetensors): a saved chat resumes without re-reading its history."""
        out = {"seen_tokens": self.seen_tokens}
        if self.condition is not None:
            out["condition"] = self.condition
        for i, layer_state in enumerate(self.states):
            for name, tensor in (layer_state or {}).items():
                out[f"layers.{i}.{name}"] = tensor
        return out

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor], num_layers: int) -> RinganCache:
        seen = tensors["seen_tokens"]
        cache = cls(num_layers, seen.shape[0], seen.device)
        cache.seen_tokens = seen.clone()
        cache.condition = tensors["condition"].clone() if "condition" in tensors else None
        for i in range(num_layers):
            prefix = f"layers.{i}."
            layer_state = {k[len(prefix) :]: t.clone() for k, t in tensors.items() if k.startswith(prefix)}
            cache.states[i] = layer_state or None
        return cache


@dataclass
class RinganModelOutput(ModelOutput):
    last_hidden_state: torch.FloatTensor | None = None
    cache: RinganCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class RinganCausalLMOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: RinganCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class RinganPreTrainedModel(PreTrainedModel):
    config_class = RinganConfig
    config: RinganConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["RinganDecoderLayer"]
    _is_stateful = True

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """`PreTrainedModel.num_parameters`, counting the weights of int8/int4 modules too: they are buffers (codes
        and scales), not parameters, but they are the model's weights. They are never trainable."""
        total = super().num_parameters(only_trainable=only_trainable, exclude_embeddings=exclude_embeddings)
        if only_trainable:
            return total
        return total + sum(
            m._rows * m._cols
            for m in self.modules()
            if isinstance(m, QUANTIZED_MODULES) and not (exclude_embeddings and isinstance(m, QuantizedEmbedding))
        )

    def dequantize(self, dtype: torch.dtype | None = None) -> RinganPreTrainedModel:
        """Turn the int8/int4 weights into float ones, in place (transformers' name for it): what training, PEFT or
        TRL need from a quantized checkpoint such as Ringan-base. Returns the model."""
        dequantize_model_(self)
        if dtype is not None:
            self.to(dtype)
        return self

    def _refuse_quantized_training(self) -> None:
        # int8/int4 weights (`config.quantization`) run, but cannot train
        if self.training and torch.is_grad_enabled() and self.config.quantization:
            raise ValueError(
                f"{type(self).__name__}: this model's weights are stored in int{self.config.quantization['bits']}, "
                f"so training would update only its {super().num_parameters():,} norm and bias parameters; call "
                "model.dequantize() first (then train, or add PEFT adapters)"
            )

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, QUANTIZED_MODULES):
            module.init_random_(std)  # a quantized normal(0, std); loaded buffers are left alone
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            # Token embeddings start at the scale of a normalised attention output (std * sqrt(width)); at 0.02
            # the normalised attention output drowns the token identity and training stalls near unigram loss.
            scale = math.sqrt(self.config.hidden_size) if getattr(module, "is_token_embedding", False) else 1.0
            init.normal_(module.weight, mean=0.0, std=std * scale)
        elif isinstance(module, RinganRMSNorm):
            init.constant_(module.weight, getattr(module, "init_value", 1.0))
        elif isinstance(module, RinganShortConvolution):
            bound = module.kernel_size**-0.5  # nn.Conv1d's default for a depthwise kernel
            init.uniform_(module.weight, -bound, bound)
        if isinstance(module, RinganLinearAttention) and module.attention_type == "retention":
            init.copy_(module.log_decay, torch.tensor(self.config.retention_log_decays))
        if isinstance(module, RinganDeltaNet) and module.attention_type == "gated_delta":
            # Mamba2's decay init: A in [1, 16], dt log-uniform in [1e-3, 0.1] (decays ~0.2 .. 0.999 per token)
            heads = module.num_heads
            init.copy_(module.A_log, torch.empty(heads).uniform_(1.0, 16.0).log())
            dt = torch.exp(torch.empty(heads).uniform_(math.log(1e-3), math.log(0.1))).clamp_min(1e-4)
            init.copy_(module.decay_proj.bias, dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)


class RinganConditioning(nn.Module):
    """The topic and context vectors of `token_emb + topic_emb + context_emb` (see `RinganConfig.conditioning`).

    - `"text"`: computed from the Topik title and the Konteks paragraph themselves: the mean of the model's own
      token embeddings of the text, RMS-normalised (so its scale does not depend on the length), one projection
      per kind, and an RMSNorm whose gain starts at `CONDITION_GAIN` of the token embeddings' scale. The vector
      is the same for every token, so its size is what matters: a zero-initialised projection grew, under AdamW,
      past the token embeddings within a hundred fine-tuning steps and drowned them (measured: +10% bits/byte on
      XPersona turns); normalised, it starts small and grows only as far as the gain learns. Any Topik or Konteks
      works, seen in training or not.
    - `"ids"`: the founding document's form: a learned row per known topic / context id (row 0 = unknown).
    - `"none"`: nothing is added.

    During training, whole sequences lose their topic and (independently) their context with probability
    `conditioning_dropout`, so the model also works without them.
    """

    def __init__(self, config: RinganConfig):
        super().__init__()
        self.mode = config.conditioning
        self.dropout = config.conditioning_dropout
        hidden = config.hidden_size
        if self.mode == "ids":
            self.embed_topics = nn.Embedding(config.num_topics, hidden)
            self.embed_contexts = nn.Embedding(config.num_contexts, hidden)
        elif self.mode == "text":
            self.topic_proj = nn.Linear(hidden, hidden, bias=False)
            self.context_proj = nn.Linear(hidden, hidden, bias=False)
            self.topic_norm = RinganRMSNorm(hidden, config.rms_norm_eps)
            self.context_norm = RinganRMSNorm(hidden, config.rms_norm_eps)
            # the vectors start at a tenth of the token embeddings' scale (std * sqrt(width), see _init_weights)
            gain = CONDITION_GAIN * config.initializer_range * math.sqrt(hidden)
            self.topic_norm.init_value = self.context_norm.init_value = gain

    def _keep(self, batch: int, device) -> torch.Tensor | None:
        """Per sequence: 1 to keep its conditioning, 0 to drop it (training only)."""
        if not self.training or self.dropout <= 0:
            return None
        return (torch.rand(batch, device=device) >= self.dropout).float()

    def _from_ids(self, table: nn.Embedding, ids: torch.Tensor, batch: int, seq_len: int, name: str) -> torch.Tensor:
        if ids.dim() not in (1, 2) or ids.shape[0] != batch or (ids.dim() == 2 and ids.shape[1] != seq_len):
            raise ValueError(f"{name} must have shape ({batch},) or ({batch}, {seq_len}), got {tuple(ids.shape)}")
        _check_range(ids, table.num_embeddings, name)
        keep = self._keep(batch, ids.device)
        if keep is not None:  # whole sequences lose their ids (also when packed, [B, T])
            ids = ids * keep.long().view(-1, *([1] * (ids.dim() - 1)))
        emb = table(ids)
        return emb.unsqueeze(1) if ids.dim() == 1 else emb  # [B, 1, hidden] or [B, T, hidden]

    def _from_text(self, embed_tokens, proj: nn.Linear, norm, ids, mask, batch: int, name: str) -> torch.Tensor:
        if ids.dim() != 2 or ids.shape[0] != batch:
            raise ValueError(f"{name}_input_ids must have shape ({batch}, length), got {tuple(ids.shape)}")
        _check_range(ids, embed_tokens.num_embeddings, f"{name}_input_ids")
        if mask is None:
            mask = torch.ones_like(ids)
        elif mask.shape != ids.shape:
            raise ValueError(
                f"{name}_attention_mask has shape {tuple(mask.shape)} but {name}_input_ids has {tuple(ids.shape)}"
            )
        weights = mask.to(embed_tokens.weight.dtype).unsqueeze(-1)  # [B, L, 1]
        pooled = (embed_tokens(ids) * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # [B, hidden]
        pooled = F.rms_norm(pooled.float(), pooled.shape[-1:]).to(pooled.dtype)  # an empty text stays 0
        keep = self._keep(batch, ids.device)
        if keep is not None:
            pooled = pooled * keep.unsqueeze(-1).to(pooled.dtype)
        vector = norm(proj(pooled))  # a text-free row (all padding, or dropped) stays 0 through both
        return vector.unsqueeze(1)  # [B, 1, hidden]

    def forward(self, embed_tokens: nn.Embedding, batch: int, seq_len: int, inputs: dict) -> torch.Tensor | None:
        """The vector to add to every token, `[B, 1, hidden]` or `[B, T, hidden]`, or `None` when no conditioning
        input was given. `inputs` holds the forward's conditioning arguments (see `RinganModel.forward`)."""
        given = {k: v for k, v in inputs.items() if v is not None}
        allowed = {
            "ids": {"topic_ids", "context_ids"},
            "text": {"topic_input_ids", "topic_attention_mask", "context_input_ids", "context_attention_mask"},
            "none": set(),
        }[self.mode]
        wrong = sorted(set(given) - allowed)
        if wrong:
            hint = {"ids": "topic_ids / context_ids", "text": "topic_input_ids / context_input_ids", "none": "none"}
            raise ValueError(
                f"{', '.join(wrong)} given, but this model's conditioning is {self.mode!r} (it takes {hint[self.mode]})"
            )
        parts = []
        if self.mode == "ids" and given:
            for table, name in ((self.embed_topics, "topic_ids"), (self.embed_contexts, "context_ids")):
                if name in given:
                    parts.append(self._from_ids(table, given[name], batch, seq_len, name))
                else:
                    parts.append(table.weight[0].view(1, 1, -1))  # not given = unknown (row 0)
        elif self.mode == "text":
            for proj, norm, name in (
                (self.topic_proj, self.topic_norm, "topic"),
                (self.context_proj, self.context_norm, "context"),
            ):
                if f"{name}_input_ids" in given:
                    ids, mask = given[f"{name}_input_ids"], given.get(f"{name}_attention_mask")
                    parts.append(self._from_text(embed_tokens, proj, norm, ids, mask, batch, name))
                elif f"{name}_attention_mask" in given:
                    raise ValueError(f"{name}_attention_mask given without {name}_input_ids")
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]

    def unknown(self, batch: int) -> torch.Tensor | None:
        """What a conversation without topic or context adds: the "unknown" rows for `"ids"`, else nothing."""
        if self.mode != "ids":
            return None
        return (self.embed_topics.weight[0] + self.embed_contexts.weight[0]).view(1, 1, -1).expand(batch, 1, -1)


def _check_range(ids: torch.Tensor, size: int, name: str) -> None:
    """Token / row ids must index a table of `size` rows (checked eagerly; skipped while tracing or compiling)."""
    if ids.dtype not in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"{name} must hold integer ids, got dtype {ids.dtype}")
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or ids.numel() == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= size:
        bad = high if high >= size else low
        raise ValueError(f"{name} holds {bad}, outside 0..{size - 1}")


def _check_continuable(cache) -> None:
    """Continuing a row whose cache read padding after its tokens would give silently wrong results."""
    if cache is not None and bool(cache.padded_rows.any()):
        rows = cache.padded_rows.nonzero().flatten().tolist()
        raise ValueError(
            f"the cache of row(s) {rows} read padding after their tokens (a right-padded batch): it cannot be "
            "continued. Pad on the left, before each row's first token"
        )


def _padding_after_tokens(token_mask: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Per row: does this call read padding after a token (seen now or by the cache)? Padding followed by a token
    (a left-padded continuation, a hole) would give silently wrong results: it is refused."""
    if token_mask.shape[1] == 1:  # a decode step (generate passes a mask every step): no token can follow
        return ~token_mask[:, 0] & (offset > 0)
    started = (token_mask.long().cumsum(-1) > 0) | (offset[:, None] > 0)
    late = ~token_mask & started  # [B, T]: padding after the row's first token
    later_token = token_mask.flip(-1).long().cumsum(-1).flip(-1) > token_mask.long()  # a token comes after
    if bool((late & later_token).any()):
        rows = (late & later_token).any(-1).nonzero().flatten().tolist()
        raise ValueError(
            f"attention_mask: row(s) {rows} have padding between tokens (or after tokens the cache has seen); "
            "padding goes on the left of a row, before its first token, or on the right of its last"
        )
    return late.any(-1)


def _token_mask(attention_mask: torch.Tensor | None, batch: int, seq_len: int, device) -> torch.Tensor | None:
    """`attention_mask` as a boolean `[B, T]` mask of the tokens fed now (a longer mask, as `generate` passes, is
    aligned to its last columns), after checking it."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2 or attention_mask.shape[0] != batch or attention_mask.shape[1] < seq_len:
        raise ValueError(
            f"attention_mask must have shape ({batch}, >= {seq_len}) (1 = token, 0 = padding), "
            f"got {tuple(attention_mask.shape)}"
        )
    mask = attention_mask[:, -seq_len:]
    if not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
    return mask.to(device=device, dtype=torch.bool)


class RinganModel(RinganPreTrainedModel):
    def __init__(self, config: RinganConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_tokens.is_token_embedding = True
        self.conditioning = RinganConditioning(config)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(RinganDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RinganRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RinganRotaryEmbedding(config.head_dim, config.rope_theta)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        topic_input_ids: torch.LongTensor | None = None,
        topic_attention_mask: torch.Tensor | None = None,
        context_input_ids: torch.LongTensor | None = None,
        context_attention_mask: torch.Tensor | None = None,
        topic_ids: torch.LongTensor | None = None,
        context_ids: torch.LongTensor | None = None,
        cache: RinganCache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RinganModelOutput | tuple:
        r"""
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
            1 for real tokens, 0 for padding. Padding adds nothing to the state and takes no RoPE position.
            A mask longer than the input (as `generate` passes) is aligned to its last columns.
        topic_input_ids (`torch.LongTensor` of shape `(batch_size, topic_length)`, *optional*):
            Token ids of each sequence's Topik title (`conditioning="text"`), e.g.
            `tokenizer(topics, add_special_tokens=False, padding=True)`; padded with `topic_attention_mask` 0.
        topic_attention_mask (`torch.Tensor` of shape `(batch_size, topic_length)`, *optional*):
            1 for the tokens of `topic_input_ids`, 0 for padding. A row with no tokens means "no topic".
        context_input_ids (`torch.LongTensor` of shape `(batch_size, context_length)`, *optional*):
            Token ids of each sequence's Konteks paragraph (`conditioning="text"`), as `topic_input_ids`.
        context_attention_mask (`torch.Tensor` of shape `(batch_size, context_length)`, *optional*):
            As `topic_attention_mask`, for `context_input_ids`.
        topic_ids (`torch.LongTensor` of shape `(batch_size,)` or `(batch_size, sequence_length)`, *optional*):
            With `conditioning="ids"`: the topic id of each sequence, or of each token when several conversations
            are packed. 0 or `None` = unknown.
        context_ids (`torch.LongTensor` of shape `(batch_size,)` or `(batch_size, sequence_length)`, *optional*):
            With `conditioning="ids"`: the Konteks id of each sequence or token, as `topic_ids`.
        cache (`RinganCache`, *optional*):
            Recurrent state from earlier calls; pass only tokens it has not seen. It also keeps the conditioning
            vector of its conversation, so later calls need not pass the topic and context again.
        """
        self._refuse_quantized_training()
        if "past_key_values" in kwargs:
            past = kwargs.pop("past_key_values")
            if past is not None:
                if cache is not None:
                    raise ValueError("pass the recurrent state as `cache` only (not also as `past_key_values`)")
                warnings.warn(
                    "`past_key_values` is deprecated for Ringan: its recurrent state is passed as `cache`",
                    FutureWarning,
                    stacklevel=2,
                )
                cache = past
        if kwargs.get("output_attentions"):
            raise ValueError("output_attentions is not available: linear attention forms no attention matrix")
        if cache is not None and not isinstance(cache, RinganCache):
            raise ValueError(f"cache must be a RinganCache (from an earlier call), got {type(cache).__name__}")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if inputs_embeds is None:
            if input_ids.dim() != 2:
                raise ValueError(
                    f"input_ids must have shape (batch_size, sequence_length), got {tuple(input_ids.shape)}"
                )
            _check_range(input_ids, self.config.vocab_size, "input_ids")
            inputs_embeds = self.embed_tokens(input_ids)
        batch, seq_len, _ = inputs_embeds.shape
        if seq_len == 0:
            raise ValueError("the input is empty: pass at least one token")
        device = inputs_embeds.device
        if cache is not None:
            cache.check_fits(self.config, batch)

        token_mask = _token_mask(attention_mask, batch, seq_len, device)
        checking = not (torch.compiler.is_compiling() or torch.jit.is_tracing())
        if checking:
            _check_continuable(cache)
        if cache is None and use_cache:
            cache = RinganCache(len(self.layers), batch, device)
        offset = (
            cache.seen_tokens.to(device) if cache is not None else torch.zeros(batch, dtype=torch.long, device=device)
        )
        if token_mask is None:
            steps = torch.arange(seq_len, device=device).expand(batch, seq_len)
            new_tokens = torch.full((batch,), seq_len, dtype=torch.long, device=device)
        else:
            steps = (token_mask.long().cumsum(-1) - 1).clamp(min=0)  # padding takes no position
            new_tokens = token_mask.long().sum(-1)
            if checking:
                padded = _padding_after_tokens(token_mask, offset)
                if cache is not None:
                    cache.padded_rows = cache.padded_rows.to(device) | padded
        cos, sin = self.rotary_emb(offset[:, None] + steps)

        conditioning_inputs = {
            "topic_input_ids": topic_input_ids,
            "topic_attention_mask": topic_attention_mask,
            "context_input_ids": context_input_ids,
            "context_attention_mask": context_attention_mask,
            "topic_ids": topic_ids,
            "context_ids": context_ids,
        }
        condition = self.conditioning(self.embed_tokens, batch, seq_len, conditioning_inputs)
        if condition is None and cache is not None and cache.condition is not None:
            condition = cache.condition  # the conversation's vector, kept from its first call
        elif condition is None:
            condition = self.conditioning.unknown(batch)
        if cache is not None and condition is not None and condition.shape[1] == 1:
            cache.condition = condition.expand(batch, 1, -1)  # per-token ids follow their tokens: not kept
        hidden_states = inputs_embeds if condition is None else inputs_embeds + condition.to(inputs_embeds.dtype)
        hidden_states = self.dropout(hidden_states)

        all_hidden_states = () if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            state = cache.states[i] if cache is not None else None
            hidden_states, new_state = layer(hidden_states, cos, sin, token_mask, state)
            if cache is not None:
                cache.states[i] = new_state
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        if cache is not None:
            cache.seen_tokens = offset + new_tokens

        output = RinganModelOutput(
            last_hidden_state=hidden_states, cache=cache if use_cache else None, hidden_states=all_hidden_states
        )
        return output if return_dict else output.to_tuple()


CONDITIONING_INPUTS = (
    "topic_input_ids",
    "topic_attention_mask",
    "context_input_ids",
    "context_attention_mask",
    "topic_ids",
    "context_ids",
)


class RinganForCausalLM(RinganPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {}

    def __init__(self, config: RinganConfig):
        super().__init__(config)
        self.model = RinganModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.quantization:
            replace_with_quantized_(self, **config.quantization)
        self.post_init()
        self._fused_step: FusedDeltaStep | None = None  # built on the first decode step, not a submodule

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model builds its own RinganCache

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`; a checkpoint that ships its code also maps `AutoModel` to the base
        model, so `AutoModel.from_pretrained(folder, trust_remote_code=True)` works as well. The map names only
        the code saved beside the weights: entries read from another folder's config (other classes, other
        files) are not carried over."""
        if getattr(self, "_auto_class", None):
            modeling = RinganModel.__module__.split(".")[-1]
            config_class = type(self.config)
            self.config.auto_map = {
                "AutoConfig": f"{config_class.__module__.split('.')[-1]}.{config_class.__name__}",
                "AutoModel": f"{modeling}.RinganModel",
                "AutoModelForCausalLM": f"{modeling}.{type(self).__name__}",
            }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        topic_input_ids: torch.LongTensor | None = None,
        topic_attention_mask: torch.Tensor | None = None,
        context_input_ids: torch.LongTensor | None = None,
        context_attention_mask: torch.Tensor | None = None,
        topic_ids: torch.LongTensor | None = None,
        context_ids: torch.LongTensor | None = None,
        cache: RinganCache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> RinganCausalLMOutput | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Next-token targets; shifted inside, `-100` is ignored (transformers' causal-LM loss, so the `Trainer`
            works unchanged, `num_items_in_batch` included).
        logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
            Compute logits for only the last `logits_to_keep` positions (0 = all), or for the given indices.
            Without gradients and with `0 < logits_to_keep <= config.prefill_segment_size`, long inputs run
            segment by segment so memory does not grow with length.

        See [`RinganModel.forward`] for the other arguments.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._check_arguments(input_ids, inputs_embeds, labels, logits_to_keep)
        conditioning = (topic_input_ids, topic_attention_mask, context_input_ids, context_attention_mask, topic_ids)
        if (
            input_ids is not None
            and input_ids.dim() == 2
            and input_ids.shape[1] == 1
            and isinstance(cache, RinganCache)
            and labels is None
            and not output_hidden_states
            and use_cache is not False
            and isinstance(logits_to_keep, int)
            and all(x is None for x in (*conditioning, context_ids, inputs_embeds))
            and not kwargs.keys() & {"past_key_values", "output_attentions"}
            and (attention_mask is None or bool(attention_mask[:, -1].all()))
        ):
            logits = self._fused_decode_step(input_ids, cache)
            if logits is not None:
                output = RinganCausalLMOutput(logits=logits[:, None], cache=cache)
                return output if return_dict else output.to_tuple()
        inputs = dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            topic_input_ids=topic_input_ids,
            topic_attention_mask=topic_attention_mask,
            context_input_ids=context_input_ids,
            context_attention_mask=context_attention_mask,
            topic_ids=topic_ids,
            context_ids=context_ids,
            cache=cache,
            use_cache=use_cache,
            inputs_embeds=inputs_embeds,
        )
        model_kwargs = {k: kwargs[k] for k in ("past_key_values", "output_attentions") if k in kwargs}
        source = input_ids if input_ids is not None else inputs_embeds
        seq_len = source.shape[1] if source is not None and source.dim() >= 2 else 0
        segment = self.config.prefill_segment_size
        if (
            labels is None
            and not output_hidden_states
            and not torch.is_grad_enabled()
            and isinstance(logits_to_keep, int)
            and 0 < logits_to_keep <= segment < seq_len
        ):
            output = self._segmented_forward(inputs, logits_to_keep, model_kwargs)
            return output if return_dict else output.to_tuple()
        outputs = self.model(**inputs, output_hidden_states=output_hidden_states, return_dict=True, **model_kwargs)
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int):
            hidden_states = hidden_states[:, -logits_to_keep:] if logits_to_keep > 0 else hidden_states
        else:
            hidden_states = hidden_states[:, logits_to_keep]
        logits = self.lm_head(hidden_states).float()

        loss = None
        if labels is not None and not (labels[:, 1:] != -100).any():
            loss = logits.sum() * 0.0 + 0.0  # no target token: nothing to learn (a mean over no tokens is NaN)
        elif labels is not None:
            loss_kwargs = {k: v for k, v in kwargs.items() if k == "num_items_in_batch"}
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **loss_kwargs)
        output = RinganCausalLMOutput(
            loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states
        )
        return output if return_dict else output.to_tuple()

    def _fused_decode_step(self, input_ids: torch.Tensor, cache: RinganCache) -> torch.Tensor | None:
        """One token a row with a cache and no gradients (every `generate` step) for the delta-rule mixers:
        `FusedDeltaStep`, the same math with fewer operators and matmuls. `None` where it does not apply."""
        if (
            self.config.attention_type not in FUSED_MIXERS
            or self.training
            or torch.is_grad_enabled()
            or torch.compiler.is_compiling()
            or torch.jit.is_tracing()
            or cache.seen_tokens.shape[0] != input_ids.shape[0]
            or any(state is None for state in cache.states)
        ):
            return None
        _check_range(input_ids, self.config.vocab_size, "input_ids")
        _check_continuable(cache)
        key = weights_key(self)
        if self._fused_step is None or self._fused_step.key != key:
            self._fused_step = FusedDeltaStep(self)
        return self._fused_step(input_ids[:, 0], cache)

    def _check_arguments(self, input_ids, inputs_embeds, labels, logits_to_keep) -> None:
        """Refuse arguments that would otherwise fail deep inside (or silently do something else) with a
        `ValueError` naming the argument and what was expected."""
        if isinstance(logits_to_keep, int) and logits_to_keep < 0:
            raise ValueError(f"logits_to_keep must be >= 0 (0 = every position), got {logits_to_keep}")
        if inputs_embeds is not None and inputs_embeds.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"inputs_embeds must have hidden_size={self.config.hidden_size} features, got {inputs_embeds.shape[-1]}"
            )
        source = input_ids if input_ids is not None else inputs_embeds
        if source is not None and source.dim() >= 2 and source.shape[0] == 0:
            raise ValueError("the batch is empty: expected at least one sequence")
        if labels is None:
            return
        if source is not None and tuple(labels.shape) != tuple(source.shape[:2]):
            raise ValueError(
                f"labels must have the shape of the input ids {tuple(source.shape[:2])}, got {tuple(labels.shape)}"
            )
        bad = (labels != -100) & ((labels < 0) | (labels >= self.config.vocab_size))
        if bad.any():
            raise ValueError(
                f"labels must be token ids in [0, {self.config.vocab_size}) or -100 (ignored), got {int(labels[bad][0])}"
            )

    def _segmented_forward(self, inputs: dict, logits_to_keep: int, model_kwargs: dict) -> RinganCausalLMOutput:
        """Inference over a long input: the whole model runs one segment at a time, carrying the state. The last
        piece is exactly the `logits_to_keep` tokens whose logits are returned."""
        source = inputs["input_ids"] if inputs["input_ids"] is not None else inputs["inputs_embeds"]
        batch, seq_len = source.shape[:2]
        use_cache = inputs["use_cache"] if inputs["use_cache"] is not None else self.config.use_cache
        cache = (
            inputs["cache"]
            if inputs["cache"] is not None
            else RinganCache(len(self.model.layers), batch, source.device)
        )
        mask = inputs["attention_mask"]
        if mask is not None and mask.dim() == 2:
            mask = mask[:, -seq_len:]
        tail = seq_len - logits_to_keep
        bounds = [
            (start, min(start + self.config.prefill_segment_size, tail))
            for start in range(0, tail, self.config.prefill_segment_size)
        ]
        bounds.append((tail, seq_len))
        for start, stop in bounds:
            part = slice(start, stop)
            piece = dict(inputs, cache=cache, use_cache=True)
            for key in ("input_ids", "inputs_embeds"):
                piece[key] = inputs[key][:, part] if inputs[key] is not None else None
            piece["attention_mask"] = mask[:, part] if mask is not None else None
            for key in ("topic_ids", "context_ids"):  # per-token ids follow their tokens
                ids = inputs[key]
                piece[key] = ids[:, part] if ids is not None and ids.dim() == 2 else ids
            outputs = self.model(**piece, return_dict=True, **model_kwargs)
        logits = self.lm_head(outputs.last_hidden_state).float()
        return RinganCausalLMOutput(logits=logits, cache=cache if use_cache else None)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: RinganCache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = True,
        logits_to_keep: int | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ) -> dict:
        model_inputs: dict = {"cache": cache, "use_cache": use_cache}
        if inputs_embeds is not None and is_first_iteration:
            model_inputs["inputs_embeds"] = inputs_embeds
            seq_len = inputs_embeds.shape[1]
        else:
            if next_sequence_length is not None:
                input_ids = input_ids[:, -next_sequence_length:]
            model_inputs["input_ids"] = input_ids.contiguous()
            seq_len = input_ids.shape[1]
        if attention_mask is not None and not bool(attention_mask[:, -seq_len:].all()):
            model_inputs["attention_mask"] = attention_mask[:, -seq_len:]
        for key in CONDITIONING_INPUTS:
            value = kwargs.pop(key, None)
            if value is None:
                continue
            if key in ("topic_ids", "context_ids") and value.dim() == 2:
                value = value[:, -seq_len:]  # per-token ids follow the tokens fed now
            elif cache is not None and cache.condition is not None and not is_first_iteration:
                continue  # the cache already holds this conversation's vector
            model_inputs[key] = value
        if logits_to_keep is not None:
            model_inputs["logits_to_keep"] = logits_to_keep
        # everything else generate() hands over (output_hidden_states, return_dict, ...) goes on to forward
        model_inputs.update({k: v for k, v in kwargs.items() if k not in model_inputs})
        return model_inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1):
        model_kwargs = super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=is_encoder_decoder, num_new_tokens=num_new_tokens
        )
        for key in ("topic_ids", "context_ids"):
            ids = model_kwargs.get(key)
            if ids is not None and ids.dim() == 2:  # a new token keeps the last token's topic/context
                model_kwargs[key] = torch.cat([ids, ids[:, -1:].expand(-1, num_new_tokens)], dim=-1)
        return model_kwargs


__all__ = ["RinganCache", "RinganForCausalLM", "RinganModel", "RinganPreTrainedModel"]
