"""Ringan: a tiny decoder-only language model with topic/context embeddings, RoPE and linear attention.

Layout (as in transformers' model files): norm, rotary embedding, MLP, attention, decoder layer, cache,
outputs, PreTrainedModel, Model, ForCausalLM. This file ships beside every checkpoint
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
from .linear_attention import chunk_linear_attention, recurrent_linear_attention_step
from .quantization import QUANTIZED_MODULES, replace_with_quantized_


class RinganRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # one fused op; computed in fp32 under autocast too
        out = F.rms_norm(hidden_states.float(), self.weight.shape, self.weight.float(), self.eps)
        return out.to(hidden_states.dtype)


class RinganRotaryEmbedding(nn.Module):
    """RoPE angles computed in fp32 from explicit positions (bf16 cannot hold positions above 256)."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self) -> torch.Tensor:
        return 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids: [B, T] -> cos, signed sin: [B, 1, T, head_dim] (broadcast over heads); the sign of
        # rotate_half is folded into sin so that applying RoPE is two multiplies and one add
        freqs = position_ids.float().unsqueeze(-1) * self.inv_freq.float()
        cos, sin = freqs.cos(), freqs.sin()
        return torch.cat((cos, cos), dim=-1).unsqueeze(1), torch.cat((-sin, sin), dim=-1).unsqueeze(1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """RoPE (rotate-half convention): x * cos + rotate_half(x) * sin, in fp32."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return (x.float() * cos + torch.cat((x2, x1), dim=-1) * signed_sin).to(x.dtype)


class RinganMLP(nn.Module):
    def __init__(self, config: RinganConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))


class RinganAttention(nn.Module):
    """Linear attention in one of three forms (see `RinganConfig.attention_type`), all with RoPE on q and k.

    Takes plain tensors and an optional per-layer state; returns the output and the new state. The state is
    `(S, z)`: `S` `[B, H, d, d]` fp32, and for `"linear"` the normaliser `z` `[B, H, d]` (else `None`).
    """

    def __init__(self, config: RinganConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.attention_type = config.attention_type
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.chunk_size = config.chunk_size
        self.gate_logit_normalizer = config.gate_logit_normalizer
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, hidden, bias=False)
        self.v_proj = nn.Linear(hidden, hidden, bias=False)
        self.o_proj = nn.Linear(hidden, hidden, bias=False)
        if self.attention_type == "retention":
            self.register_buffer(
                "log_decay", torch.tensor(config.retention_log_decays, dtype=torch.float32), persistent=False
            )
        if self.attention_type == "gated":
            self.decay_proj = nn.Linear(hidden, self.num_heads, bias=True)
        # Without a denominator an output normalisation is mandatory; "linear" keeps its classic normaliser.
        self.out_norm = RinganRMSNorm(self.head_dim, config.rms_norm_eps) if self.attention_type != "linear" else None
        self.gate_proj = nn.Linear(hidden, hidden, bias=False) if config.use_output_gate else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        token_mask: torch.Tensor | None = None,
        state: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor | None]]:
        batch, seq_len, _ = hidden_states.shape
        # [B, T, H*D] -> [B, H, T, D]
        q = self.q_proj(hidden_states).view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
        mask = token_mask[:, None, :, None].to(k.dtype) if token_mask is not None else None  # [B, 1, T, 1]
        s_prev, z_prev = state if state is not None else (None, None)

        if self.attention_type == "linear":
            phi_q, phi_k = F.elu(q) + 1.0, F.elu(k) + 1.0
            if mask is not None:
                phi_k = phi_k * mask  # padding adds nothing to the state or the normaliser
            # RoPE in the numerator only (RoFormer section 3.3): the denominator stays positive.
            q_rot, k_rot = apply_rotary(phi_q, cos, sin), apply_rotary(phi_k, cos, sin)
            numerator, s_new = self._attend(q_rot, k_rot, v, None, s_prev)
            z = phi_k.float().cumsum(2)  # [B, H, T, D]
            if z_prev is not None:
                z = z + z_prev.unsqueeze(2)
            denominator = (phi_q.float() * z).sum(-1, keepdim=True)
            out = (numerator.float() / (denominator + 1e-6)).to(v.dtype)
            new_state = (s_new, z[:, :, -1])
        else:
            q = apply_rotary(q * self.head_dim**-0.5, cos, sin)
            k = apply_rotary(k, cos, sin)
            if mask is not None:
                k = k * mask
            if self.attention_type == "retention":
                log_decay = self.log_decay
                if token_mask is not None:  # [H] -> [B, H, T]: padding must not decay the state
                    log_decay = log_decay[None, :, None] * token_mask[:, None, :].float()
            else:
                # [B, T, H] -> [B, H, T]; logsigmoid keeps every exponent <= 0
                log_decay = (
                    F.logsigmoid(self.decay_proj(hidden_states).float()) / self.gate_logit_normalizer
                ).transpose(1, 2)
                if token_mask is not None:
                    log_decay = log_decay * token_mask[:, None, :].float()  # padding neither decays nor adds
            out, s_new = self._attend(q, k, v, log_decay, s_prev)
            new_state = (s_new, None)

        out = out.transpose(1, 2)  # [B, T, H, D]
        if self.out_norm is not None:
            out = self.out_norm(out)
        out = out.reshape(batch, seq_len, self.num_heads * self.head_dim)
        if self.gate_proj is not None:
            out = out * F.silu(self.gate_proj(hidden_states))
        return self.o_proj(out), new_state

    def _attend(self, q, k, v, log_decay, state):
        if q.shape[2] == 1 and state is not None:  # the lean decode step
            step_decay = log_decay[:, :, 0] if log_decay is not None and log_decay.dim() == 3 else log_decay
            out, state = recurrent_linear_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], step_decay, state)
            return out.unsqueeze(2), state
        return chunk_linear_attention(q, k, v, log_decay, state, chunk_size=self.chunk_size)


class RinganDecoderLayer(nn.Module):
    def __init__(self, config: RinganConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RinganRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = RinganAttention(config, layer_idx)
        self.post_attention_layernorm = RinganRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = RinganMLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states, cos, sin, token_mask=None, state=None):
        attn_out, new_state = self.self_attn(self.input_layernorm(hidden_states), cos, sin, token_mask, state)
        hidden_states = hidden_states + self.dropout(attn_out)
        hidden_states = hidden_states + self.dropout(self.mlp(self.post_attention_layernorm(hidden_states)))
        return hidden_states, new_state


class RinganCache:
    """Fixed-size recurrent cache: per layer `(S [B, H, d, d] fp32, z [B, H, d] or None)` and, per row, the
    number of real (unpadded) tokens seen, which is the next RoPE position.

    To continue from a returned cache, pass only the tokens the cache has not seen yet.
    """

    is_compileable = False
    is_croppable = False

    def __init__(self, num_layers: int, batch_size: int, device: torch.device | str | None = None):
        self.states: list[tuple[torch.Tensor, torch.Tensor | None] | None] = [None] * num_layers
        self.seen_tokens = torch.zeros(batch_size, dtype=torch.long, device=device)

    @property
    def is_linear(self) -> list[bool]:
        return [True] * len(self.states)

    def __len__(self) -> int:
        return len(self.states)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return int(self.seen_tokens.max()) if self.seen_tokens.numel() else 0

    def _map(self, fn) -> None:
        self.states = [None if s is None else (fn(s[0]), None if s[1] is None else fn(s[1])) for s in self.states]
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
        for i, s in enumerate(self.states):
            if s is not None:
                out[f"layers.{i}.state"] = s[0]
                if s[1] is not None:
                    out[f"layers.{i}.normalizer"] = s[1]
        return out

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor], num_layers: int) -> RinganCache:
        seen = tensors["seen_tokens"]
        cache = cls(num_layers, seen.shape[0], seen.device)
        cache.seen_tokens = seen.clone()
        for i in range(num_layers):
            if f"layers.{i}.state" in tensors:
                cache.states[i] = (tensors[f"layers.{i}.state"].clone(), tensors.get(f"layers.{i}.normalizer"))
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
        elif isinstance(module, RinganRotaryEmbedding):
            init.copy_(module.inv_freq, module.compute_inv_freq())
        if isinstance(module, RinganAttention):
            if module.attention_type == "retention":
                init.copy_(module.log_decay, torch.tensor(self.config.retention_log_decays))
            if module.attention_type == "gated":
                init.zeros_(module.decay_proj.bias)


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
