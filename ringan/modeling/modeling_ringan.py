"""Ringan: a tiny decoder-only language model with topic/context embeddings, RoPE and linear attention.

Layout (as in transformers' model files): MLP, decoder layer, cache, outputs, PreTrainedModel, Model,
ForCausalLM; the sequence mixers live in `mixer_*.py`, their kernels in `ops_*.py`, shared blocks in `modules.py`. This file ships beside every checkpoint
(`trust_remote_code=True`), so it imports only torch, transformers' public names and its siblings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_ringan import RinganConfig
from .mixer_delta import RinganDeltaNet
from .mixer_linear import RinganLinearAttention
from .modules import RinganRMSNorm, RinganRotaryEmbedding, RinganShortConvolution
from .quantization import QUANTIZED_MODULES, replace_with_quantized_

MIXERS = {
    "linear": RinganLinearAttention,
    "retention": RinganLinearAttention,
    "gated": RinganLinearAttention,
    "delta": RinganDeltaNet,
    "gated_delta": RinganDeltaNet,
}


class RinganMLP(nn.Module):
    def __init__(self, config: RinganConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))


class RinganDecoderLayer(nn.Module):
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

    To continue from a returned cache, pass only the tokens the cache has not seen yet.
    """

    is_compileable = False
    is_croppable = False

    def __init__(self, num_layers: int, batch_size: int, device: torch.device | str | None = None):
        self.states: list[dict[str, torch.Tensor] | None] = [None] * num_layers
        self.seen_tokens = torch.zeros(batch_size, dtype=torch.long, device=device)

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

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map(lambda t: t[indices])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors (for safetensors): a saved chat resumes without re-reading its history."""
        out = {"seen_tokens": self.seen_tokens}
        for i, layer_state in enumerate(self.states):
            for name, tensor in (layer_state or {}).items():
                out[f"layers.{i}.{name}"] = tensor
        return out

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor], num_layers: int) -> RinganCache:
        seen = tensors["seen_tokens"]
        cache = cls(num_layers, seen.shape[0], seen.device)
        cache.seen_tokens = seen.clone()
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
            init.ones_(module.weight)
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


class RinganModel(RinganPreTrainedModel):
    def __init__(self, config: RinganConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_tokens.is_token_embedding = True
        self.embed_topics = nn.Embedding(config.num_topics, config.hidden_size)
        self.embed_contexts = nn.Embedding(config.num_contexts, config.hidden_size)
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

    def _condition(self, table: nn.Embedding, ids: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """Embed topic/context ids given per sequence `[B]` or per token `[B, T]`; `None` means unknown (0)."""
        if ids is None:
            return table.weight[0].to(like.dtype)  # broadcasts over [B, T, hidden]
        ids = ids.to(like.device)
        if ids.min() < 0 or ids.max() >= table.num_embeddings:
            raise ValueError(
                f"id {int(ids.max() if ids.max() >= table.num_embeddings else ids.min())} is out of range for an "
                f"embedding of {table.num_embeddings} rows (0 = unknown)"
            )
        if self.training and self.config.conditioning_dropout > 0:
            # whole sequences lose their ids (also when packed, [B, T]): the model must learn to work without them
            drop = torch.rand(ids.shape[0], device=ids.device) < self.config.conditioning_dropout
            ids = ids.masked_fill(drop.view(-1, *([1] * (ids.dim() - 1))), 0)
        emb = table(ids).to(like.dtype)
        return emb.unsqueeze(1) if ids.dim() == 1 else emb  # [B, 1, hidden] or [B, T, hidden]

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        topic_ids: torch.LongTensor | None = None,
        context_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: RinganCache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RinganModelOutput | tuple:
        r"""
        topic_ids (`torch.LongTensor` of shape `(batch_size,)` or `(batch_size, sequence_length)`, *optional*):
            Topic of each sequence, or of each token when several conversations are packed. 0 or `None` = unknown.
        context_ids (`torch.LongTensor` of shape `(batch_size,)` or `(batch_size, sequence_length)`, *optional*):
            Konteks of each sequence or token, as `topic_ids`.
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
            1 for real tokens, 0 for padding. Padding adds nothing to the state and takes no RoPE position.
            A mask longer than the input (as `generate` passes) is aligned to its last columns.
        cache (`RinganCache`, *optional*):
            Recurrent state from earlier calls; pass only tokens it has not seen.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch, seq_len, _ = inputs_embeds.shape
        device = inputs_embeds.device

        token_mask = None
        if attention_mask is not None:
            token_mask = attention_mask[:, -seq_len:].to(device=device, dtype=torch.bool)
            if bool(token_mask.all()):
                token_mask = None
        if cache is None and use_cache:
            cache = RinganCache(len(self.layers), batch, device)
        offset = (
            cache.seen_tokens.to(device) if cache is not None else torch.zeros(batch, dtype=torch.long, device=device)
        )
        if token_mask is None:
            steps = torch.arange(seq_len, device=device).expand(batch, seq_len)
            new_tokens = torch.full((batch,), seq_len, dtype=torch.long, device=device)
        else:
            steps = (token_mask.long().cumsum(-1) - 1).clamp(min=0)
            new_tokens = token_mask.long().sum(-1)
        cos, sin = self.rotary_emb(offset[:, None] + steps)

        hidden_states = inputs_embeds + self._condition(self.embed_topics, topic_ids, inputs_embeds)
        hidden_states = hidden_states + self._condition(self.embed_contexts, context_ids, inputs_embeds)
        hidden_states = self.dropout(hidden_states)

        all_hidden_states = () if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            state = cache.states[i] if cache is not None else None
            if self.gradient_checkpointing and self.training:
                hidden_states, new_state = self._gradient_checkpointing_func(
                    layer.__call__, hidden_states, cos, sin, token_mask, state
                )
            else:
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
        return output if return_dict is not False else output.to_tuple()


class RinganForCausalLM(RinganPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {}

    def __init__(self, config: RinganConfig):
        super().__init__(config)
        self.model = RinganModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.quantization:
            replace_with_quantized_(self, **config.quantization)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model builds its own RinganCache

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
        topic_ids: torch.LongTensor | None = None,
        context_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
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
        seq_len = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        segment = self.config.prefill_segment_size
        if (
            labels is None
            and not output_hidden_states
            and not torch.is_grad_enabled()
            and isinstance(logits_to_keep, int)
            and 0 < logits_to_keep <= segment < seq_len
        ):
            return self._segmented_forward(
                input_ids,
                topic_ids,
                context_ids,
                attention_mask,
                cache,
                use_cache,
                inputs_embeds,
                logits_to_keep,
                return_dict,
            )
        outputs = self.model(
            input_ids=input_ids,
            topic_ids=topic_ids,
            context_ids=context_ids,
            attention_mask=attention_mask,
            cache=cache,
            use_cache=use_cache,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int):
            hidden_states = hidden_states[:, -logits_to_keep:] if logits_to_keep > 0 else hidden_states
        else:
            hidden_states = hidden_states[:, logits_to_keep]
        logits = self.lm_head(hidden_states).float()

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        output = RinganCausalLMOutput(
            loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states
        )
        return output if return_dict is not False else output.to_tuple()

    def _segmented_forward(
        self,
        input_ids,
        topic_ids,
        context_ids,
        attention_mask,
        cache,
        use_cache,
        inputs_embeds,
        logits_to_keep,
        return_dict,
    ):
        """Inference over a long input: the whole model runs one segment at a time, carrying the state."""
        source = input_ids if input_ids is not None else inputs_embeds
        batch, seq_len = source.shape[:2]
        if cache is None:
            cache = RinganCache(len(self.model.layers), batch, source.device)
        if attention_mask is not None:
            attention_mask = attention_mask[:, -seq_len:]
        segment = self.config.prefill_segment_size
        for start in range(0, seq_len, segment):
            part = slice(start, start + segment)
            outputs = self.model(
                input_ids=input_ids[:, part] if input_ids is not None else None,
                inputs_embeds=inputs_embeds[:, part] if inputs_embeds is not None else None,
                topic_ids=topic_ids[:, part] if topic_ids is not None and topic_ids.dim() == 2 else topic_ids,
                context_ids=context_ids[:, part] if context_ids is not None and context_ids.dim() == 2 else context_ids,
                attention_mask=attention_mask[:, part] if attention_mask is not None else None,
                cache=cache,
                use_cache=True,
                return_dict=True,
            )
        last = outputs.last_hidden_state
        if last.shape[1] < logits_to_keep:
            raise ValueError("logits_to_keep is longer than the last segment")  # unreachable: keep <= segment
        logits = self.lm_head(last[:, -logits_to_keep:]).float()
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        output = RinganCausalLMOutput(logits=logits, cache=cache if use_cache else None)
        return output if return_dict is not False else output.to_tuple()

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: RinganCache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        topic_ids: torch.LongTensor | None = None,
        context_ids: torch.LongTensor | None = None,
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
        # per-token ids follow the tokens: keep the columns of the tokens fed now
        model_inputs["topic_ids"] = (
            topic_ids[:, -seq_len:] if topic_ids is not None and topic_ids.dim() == 2 else topic_ids
        )
        model_inputs["context_ids"] = (
            context_ids[:, -seq_len:] if context_ids is not None and context_ids.dim() == 2 else context_ids
        )
        if logits_to_keep is not None:
            model_inputs["logits_to_keep"] = logits_to_keep
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
