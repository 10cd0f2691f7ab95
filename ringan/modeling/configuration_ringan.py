"""Ringan model configuration."""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

ATTENTION_TYPES = ("linear", "retention", "gated", "delta", "gated_delta")
CONDITIONING_MODES = ("text", "ids", "none")
ACTIVATIONS = ("gelu", "relu", "silu")


SIZE_LIMITS = {
    "vocab_size": 1 << 20, "hidden_size": 16384, "intermediate_size": 65536, "num_hidden_layers": 256,
    "num_attention_heads": 1024, "num_topics": 1_000_000, "num_contexts": 1_000_000, "chunk_size": 65536,
    "prefill_segment_size": 1 << 20, "conv_size": 64,
}  # fmt: skip


class RinganConfig(PreTrainedConfig):
    r"""
    Configuration of a [`RinganForCausalLM`]: a small decoder-only language model whose every input vector is
    `token_emb + topic_emb + context_emb`, with RoPE and linear attention so that long contexts cost constant
    memory per token. The sizes follow the founding document (vocab 10000, width 256, 2 layers, 4 heads, a 4x FFN's
    parameters); with the mixer and conditioning chosen by measurement (experiments/RESULTS.md) that is 6.98M
    parameters, 3.6% above the document's 6.73M.

    Args:
        vocab_size (`int`, *optional*, defaults to 10000):
            Size of the tokenizer's vocabulary: the rows of the token embedding and of the LM head.
        hidden_size (`int`, *optional*, defaults to 256):
            Width of the residual stream and of every embedding.
        intermediate_size (`int`, *optional*, defaults to 688):
            Width of the feed-forward layer: 688 with the gated (SwiGLU) layer has the parameters of the founding
            document's plain 4x layer (3 x 256 x 688 = 2 x 256 x 1024).
        num_hidden_layers (`int`, *optional*, defaults to 2):
            Number of decoder layers.
        num_attention_heads (`int`, *optional*, defaults to 4):
            Number of attention heads; each head keeps a `head_dim x head_dim` fp32 state when generating.
        conditioning (`str`, *optional*, defaults to `"text"`):
            How the topic and context vectors added to every token are made: `"text"` (from the Topik title and
            the Konteks paragraph: pooled token embeddings, projected; works for any text, seen or not), `"ids"`
            (the founding document's form: a learned row per known topic / context id) or `"none"`.
        num_topics (`int`, *optional*, defaults to 50):
            With `conditioning="ids"`: rows of the topic embedding. Row 0 is "unknown topic".
        num_contexts (`int`, *optional*, defaults to 100):
            With `conditioning="ids"`: rows of the context embedding. Row 0 is "unknown context".
        max_position_embeddings (`int`, *optional*, defaults to 131072):
            The context length the model is meant for. Nothing is allocated per position (RoPE angles are
            computed on the fly and the recurrent state has a fixed size); it is informative.
        attention_type (`str`, *optional*, defaults to `"gated_delta"`):
            The sequence mixer. `"linear"` (elu+1 feature map with normaliser, RoPE in the numerator only),
            `"retention"` (fixed per-head decay, no denominator, per-head RMSNorm), `"gated"` (data-dependent
            per-head decay), `"delta"` (DeltaNet: the delta rule with L2-normalised q/k) or `"gated_delta"`
            (Gated DeltaNet: the delta rule with a data-dependent decay).
        conv_size (`int`, *optional*, defaults to 4):
            Width of a short causal depthwise convolution on q, k and v (0 = none). Its last `conv_size - 1`
            inputs are part of the fixed-size cache.
        use_rope (`bool`, *optional*, defaults to `True`):
            Rotate q and k with RoPE (the founding document's position signal).
        retention_decays (`list[float]`, *optional*):
            Decay `gamma` per head for `"retention"`. Defaults to a long spectrum `1 - 2**-e` with `e` spread
            evenly from 5 to 15 (memories of about 32 to 32k tokens).
        gate_logit_normalizer (`float`, *optional*, defaults to 16.0):
            For `"gated"`: the log-decay is `logsigmoid(W x) / gate_logit_normalizer`, keeping decays near 1.
        use_output_gate (`bool`, *optional*, defaults to `True`):
            Multiply the attention output by a swish gate (adds `hidden_size**2` parameters per layer).
        chunk_size (`int`, *optional*, defaults to 64):
            Tokens per chunk in the chunkwise-parallel attention.
        prefill_segment_size (`int`, *optional*, defaults to 1024):
            Without gradients, longer inputs run through the whole model segment by segment, carrying the
            recurrent state, so memory stays proportional to one segment.
        gated_mlp (`bool`, *optional*, defaults to `True`):
            A GLU feed-forward layer, `down(act(gate(x)) * up(x))` (three matrices; SwiGLU with `hidden_act="silu"`,
            as Llama). At equal parameters its `intermediate_size` is 2/3 of the plain layer's.
        hidden_act (`str`, *optional*, defaults to `"silu"`):
            Activation of the feed-forward layer.
        rope_theta (`float`, *optional*, defaults to 10000.0):
            Base period of the rotary position embedding.
        rms_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the RMS norms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser.
        dropout (`float`, *optional*, defaults to 0.1):
            Dropout on the embeddings and on each residual branch.
        conditioning_dropout (`float`, *optional*, defaults to 0.3):
            During training, the probability of dropping a sequence's topic and context (its vector, or its ids
            replaced by 0 = unknown), so the model also works when none are given. Measured (experiments/RESULTS.md):
            0.3 keeps a text-conditioned model within 0.3% of an unconditioned one when no topic/context is given
            (0.1: 2.8% worse), at the same quality when they are.
        topic_names (`list[str]`, *optional*):
            The topic of each topic id (index 0 = unknown), so a checkpoint knows its topics by name.
        context_names (`list[str]`, *optional*):
            The Konteks paragraph of each context id (index 0 = unknown).
        quantization (`dict`, *optional*):
            Weight-only quantization of the checkpoint (`{"bits": 8 | 4, "group_size": int}`), or `None`.
        use_cache (`bool`, *optional*, defaults to `True`):
            Whether forward returns the recurrent-state cache.
        pad_token_id (`int`, *optional*, defaults to 0):
        bos_token_id (`int`, *optional*, defaults to 1):
        eos_token_id (`int`, *optional*, defaults to 2):
            Special token ids of the Ringan tokenizer.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            The founding document uses a separate prediction layer.
    """

    model_type = "ringan"

    vocab_size: int = 10000  # the founding document's vocabulary
    hidden_size: int = 256  # tiny width: the whole model is ~27 MB in fp32
    intermediate_size: int = 688  # SwiGLU at the parameters of the founding document's FFN 4x
    num_hidden_layers: int = 2  # depth from the founding document
    num_attention_heads: int = 4  # 4 heads of 64: a 64x64 state each
    conditioning: str = "text"  # topic/context vectors from the Topik/Konteks text: works for unseen ones
    num_topics: int = 50  # topic embedding rows, 0 = unknown
    num_contexts: int = 100  # context embedding rows, 0 = unknown
    max_position_embeddings: int = 131072  # the 128k promise; nothing is sized by it
    attention_type: str = "gated_delta"  # best bits/byte of the mixers measured (experiments/RESULTS.md)
    conv_size: int = 4  # short causal conv on q/k/v: local n-gram features cheaply
    use_rope: bool = True  # RoPE on q and k, as the founding document says
    retention_decays: list[float] | None = None  # per-head gamma; None = long spectrum
    gate_logit_normalizer: float = 16.0  # keeps gated decays close to 1 at init
    use_output_gate: bool = True  # swish output gate: part of the measured winner
    chunk_size: int = 64  # chunkwise attention block: O(T*C) work, cache friendly
    prefill_segment_size: int = 1024  # bounds inference memory at any length (measured: benchmarks/README.md)
    gated_mlp: bool = True  # SwiGLU feed-forward: 3.4% lower prose bits/byte than GELU at equal parameters
    hidden_act: str = "silu"
    rope_theta: float = 10000.0  # standard RoPE base
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    dropout: float = 0.1  # founding document's dropout
    conditioning_dropout: float = 0.3  # keeps the model good without a topic/context (0.1 was 2.8% worse there)
    topic_names: list[str] | None = None  # id -> topic title
    context_names: list[str] | None = None  # id -> Konteks paragraph
    quantization: dict | None = None  # weight-only int8/int4 (see quantization.py)
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        # upper limits keep a damaged or hostile config.json from asking for terabytes
        for name, maximum in SIZE_LIMITS.items():
            _require_int(self, name, minimum=0 if name == "conv_size" else 1, maximum=maximum)
        for name in ("use_rope", "use_output_gate", "gated_mlp", "use_cache"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("rope_theta", "rms_norm_eps", "gate_logit_normalizer", "initializer_range"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.conv_size == 1:
            raise ValueError("conv_size must be 0 (no convolution) or at least 2, got 1")
        if self.attention_type not in ATTENTION_TYPES:
            raise ValueError(f"attention_type must be one of {ATTENTION_TYPES}, got {self.attention_type!r}")
        if self.conditioning not in CONDITIONING_MODES:
            raise ValueError(f"conditioning must be one of {CONDITIONING_MODES}, got {self.conditioning!r}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {ACTIVATIONS}, got {self.hidden_act!r}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(
                f"the head dimension hidden_size / num_attention_heads = {self.hidden_size // self.num_attention_heads} "
                "must be even (RoPE rotates pairs of dimensions)"
            )
        for name in ("dropout", "conditioning_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if self.retention_decays is None:
            heads = self.num_attention_heads
            exponents = [5.0 + 10.0 * h / max(heads - 1, 1) for h in range(heads)]
            self.retention_decays = [1.0 - 2.0**-e for e in exponents]
        if len(self.retention_decays) != self.num_attention_heads:
            raise ValueError(
                f"retention_decays has {len(self.retention_decays)} values for {self.num_attention_heads} heads"
            )
        if not all(0.0 < g < 1.0 for g in self.retention_decays):
            raise ValueError(f"every retention decay must be in (0, 1), got {self.retention_decays}")
        super().__post_init__(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def retention_log_decays(self) -> list[float]:
        return [math.log(g) for g in self.retention_decays]


def _require_int(config: RinganConfig, name: str, minimum: int, maximum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be an integer >= {minimum} and <= {maximum:,}, got {value!r}")


__all__ = ["RinganConfig"]
