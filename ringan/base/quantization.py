"""Weight-only int8 / int4 quantization inside the model class.

This file ships beside every quantized checkpoint (`trust_remote_code=True`), so it imports only torch.

Storage (what `save_pretrained` writes, per quantized module):

- `bits=8`: `qweight` int8 `[rows, cols]` and `scales` fp16 `[rows, groups]`; `w = qweight * scale`.
- `bits=4`: `qweight` uint8 `[rows, cols / 2]`, two 4-bit codes per byte (low nibble = even column), each code
  `q + 8` for `q` in `[-8, 7]`; `scales` fp16 `[rows, groups]`; `w = q * scale` (symmetric, no zero point; each
  group's scale is the clipping of its largest weight, among a few, with the least squared error).

Groups run along the input dimension (a Linear's `in_features`, an Embedding's `embedding_dim`), so every row
of the weight has its own scales; `group_size=0` means one group per row. A row whose width is not a multiple of
the group size is padded with zeros for storage and cut back when dequantized.

At run time, on CPU and without gradients, the weights stay quantized in memory: int8 rows go through torch's
weight-only int8 matmul (scales per row), int4 through its int4 matmul (the codes repacked once into the kernel's
layout, still 4 bits a weight), both with bf16 activations (their fast path: fp32 activations took 29x longer in
the int4 kernel at batch 1), and an embedding dequantizes only the rows it looks up.
Elsewhere (a GPU, gradients, a torch without these kernels, int8 with groups) a module dequantizes its weight
once and keeps the float tensor in a plain Python attribute (never a buffer or parameter, so it is never saved);
that cache is rebuilt if the stored codes change (a new load, `.to(device)`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_BITS = (8, 4)
DEFAULT_GROUP_SIZE = {8: 0, 4: 32}  # int8: one scale per row; int4: one per 32 weights (see conversion/README.md)
INT4_CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)  # searched per group: -20% KL vs plain absmax (README)
_FP16_TINY = 2.0**-24  # smallest positive fp16 (subnormal): a scale must never round to 0
# torch's CPU weight-only kernels (looked up by name: a torch without them takes the dequantized path)
_INT8_MM = getattr(torch.ops.aten, "_weight_int8pack_mm", None)
_INT4_MM = getattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu", None)
_INT4_PACK = getattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu", None)
INT4_KERNEL_GROUPS = (32, 64, 128, 256)


def resolve_quantization(bits: int, group_size: int | None = None) -> dict:
    """The `config.quantization` dict for `bits` (8 or 4) and `group_size` (`None` = the default for `bits`;
    0 = one group per row; else a positive even number)."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits!r}")
    if group_size is None:
        group_size = DEFAULT_GROUP_SIZE[bits]
    group_size = int(group_size)
    if group_size < 0 or (group_size and group_size % 2):
        raise ValueError(f"group_size must be 0 (per row) or a positive even number, got {group_size}")
    return {"bits": int(bits), "group_size": group_size}


def _layout(cols: int, bits: int, group_size: int) -> tuple[int, int, int]:
    """(group, groups per row, padded row width) for rows of `cols` weights."""
    group = group_size if group_size else cols + (cols % 2 if bits == 4 else 0)
    groups = math.ceil(cols / group)
    return group, groups, groups * group


def quantize_weight(weight: torch.Tensor, bits: int, group_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a 2-D float weight `[rows, cols]` along `cols`: returns `(qweight, scales fp16)` as stored."""
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    rows, cols = weight.shape
    group, groups, padded = _layout(cols, bits, group_size)
    w = weight.detach().float()
    if padded != cols:
        w = F.pad(w, (0, padded - cols))
    w = w.view(rows, groups, group)
    if bits == 8:
        scales = (w.abs().amax(-1) / 127.0).half().float().clamp_min(_FP16_TINY)
        q = torch.round(w / scales.unsqueeze(-1)).clamp_(-127, 127).to(torch.int8).view(rows, padded)
        return q, scales.half()
    # int4: scale = (largest-magnitude weight of the group) * r / -8, with r chosen per group among a few
    # clipping ratios to minimise the squared error (r = 1 maps that weight exactly to -8)
    peak = w.gather(-1, w.abs().argmax(-1, keepdim=True)).squeeze(-1)
    best_scales, best_err = None, None
    for ratio in INT4_CLIP_RATIOS:
        scales = (peak * (ratio / -8.0)).half().float()
        scales = torch.where(scales.abs() < _FP16_TINY, torch.full_like(scales, _FP16_TINY), scales)
        err = (torch.round(w / scales.unsqueeze(-1)).clamp_(-8, 7) * scales.unsqueeze(-1) - w).pow_(2).sum(-1)
        if best_scales is None:
            best_scales, best_err = scales, err
        else:
            better = err < best_err
            best_scales, best_err = torch.where(better, scales, best_scales), torch.where(better, err, best_err)
    q = torch.round(w / best_scales.unsqueeze(-1)).clamp_(-8, 7).to(torch.int16).view(rows, padded) + 8
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).to(torch.uint8)
    return packed, best_scales.half()


def dequantize_weight(
    qweight: torch.Tensor, scales: torch.Tensor, bits: int, group_size: int, cols: int, dtype=torch.float32
) -> torch.Tensor:
    """Inverse of `quantize_weight`: the `[rows, cols]` weight in `dtype`."""
    rows = qweight.shape[0]
    group, groups, padded = _layout(cols, bits, group_size)
    if bits == 8:
        q = qweight.float()
    else:
        codes = qweight.to(torch.int16)
        q = torch.stack(((codes & 0x0F) - 8, (codes >> 4) - 8), dim=-1).view(rows, padded).float()
    w = q.view(rows, groups, group) * scales.float().unsqueeze(-1)
    return w.view(rows, padded)[:, :cols].to(dtype).contiguous()


class _QuantizedWeight(nn.Module):
    """Shared storage and lazy float cache of `QuantizedLinear` and `QuantizedEmbedding`."""

    def _setup(self, rows: int, cols: int, bits: int, group_size: int | None, device=None) -> None:
        spec = resolve_quantization(bits, group_size)
        self.bits, self.group_size = spec["bits"], spec["group_size"]
        self._rows, self._cols = rows, cols
        _, groups, padded = _layout(cols, self.bits, self.group_size)
        qdtype, width = (torch.int8, padded) if self.bits == 8 else (torch.uint8, padded // 2)
        self.register_buffer("qweight", torch.zeros(rows, width, dtype=qdtype, device=device))
        self.register_buffer("scales", torch.zeros(rows, groups, dtype=torch.float16, device=device))
        self._dequantized = None  # (key, float weight): a plain attribute, never saved
        self._kernel_weight = None  # (key, tensors in the quantized kernel's layout): likewise
        # the float dtype the module computes in: the default dtype at construction (from_pretrained(dtype=...)
        # builds under it), then whatever .to(dtype)/.half()/.float() asks for
        self.compute_dtype = torch.get_default_dtype()

    @torch.no_grad()
    def quantize_(self, weight: torch.Tensor) -> _QuantizedWeight:
        """Store `weight` (`[rows, cols]`, float) quantized."""
        if tuple(weight.shape) != (self._rows, self._cols):
            raise ValueError(f"weight of shape {tuple(weight.shape)} for a {(self._rows, self._cols)} module")
        q, s = quantize_weight(weight.to(self.qweight.device), self.bits, self.group_size)
        self.qweight.copy_(q)
        self.scales.copy_(s)
        self._dequantized = None
        if weight.is_floating_point():
            self.compute_dtype = weight.dtype  # a bf16 model stays a bf16 model
        return self

    @torch.no_grad()
    def init_random_(self, std: float) -> None:
        """Quantize a fresh normal(0, std) weight, as `_init_weights` does for float modules. Buffers that
        transformers marks as loaded (`_is_hf_initialized`) are left alone."""
        if getattr(self.qweight, "_is_hf_initialized", False) or getattr(self.scales, "_is_hf_initialized", False):
            return
        if self.qweight.device.type == "meta":
            return
        self.quantize_(torch.randn(self._rows, self._cols, device=self.qweight.device) * std)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The float weight (in `dtype`, default `compute_dtype`), computed once and cached until the stored codes
        or the dtype change."""
        dtype = dtype or self.compute_dtype
        q, s = self.qweight, self.scales
        key = (q.device, dtype, q.data_ptr(), q._version, s.data_ptr(), s._version)
        cached = self._dequantized
        if cached is None or cached[0] != key:
            # a normal tensor even when first called under inference_mode (it may be reused with autograd on)
            with torch.inference_mode(False), torch.no_grad():
                weight = dequantize_weight(q, s, self.bits, self.group_size, self._cols, dtype)
            self._dequantized = cached = (key, weight)
        return cached[1]

    @property
    def weight(self) -> torch.Tensor:
        return self.dequantize()

    def _storage_key(self) -> tuple:
        q, s = self.qweight, self.scales
        return (q.device, q.data_ptr(), q._version, s.data_ptr(), s._version)

    def _apply(self, fn, recurse=True):
        self._dequantized = None  # device/dtype moves rebuild the caches
        self._kernel_weight = None
        probe = fn(torch.zeros((), dtype=self.compute_dtype))  # the float dtype this call converts to
        if probe.is_floating_point():
            self.compute_dtype = probe.dtype
        return super()._apply(fn, recurse)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_dequantized"] = None  # pickling/deepcopy never carries the fp32 copy
        state["_kernel_weight"] = None
        return state


class QuantizedLinear(_QuantizedWeight):
    """A bias-free `nn.Linear` whose weight is stored in int8 or packed int4 with fp16 scales."""

    def __init__(self, in_features: int, out_features: int, bits: int = 8, group_size: int | None = None, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._setup(out_features, in_features, bits, group_size, device)

    bias = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, group_size: int | None = None) -> QuantizedLinear:
        if linear.bias is not None:
            raise ValueError("QuantizedLinear has no bias")
        module = cls(linear.in_features, linear.out_features, bits, group_size, device=linear.weight.device)
        return module.quantize_(linear.weight)

    def _kernel_inputs(self) -> tuple | None:
        """The stored codes in the CPU kernel's layout (built once per load), or None where no kernel applies."""
        if self.qweight.device.type != "cpu":
            return None
        if self.bits == 8 and (_INT8_MM is None or self.group_size):
            return None
        if self.bits == 4 and (_INT4_MM is None or _INT4_PACK is None or self.group_size not in INT4_KERNEL_GROUPS):
            return None
        if self.bits == 4 and (self._cols % self.group_size or self._rows % 16):  # the kernel's tile sizes
            return None
        if self.bits == 8 and self.qweight.data_ptr() % 64:
            # a loaded checkpoint's tensors can sit at any offset of the file's buffer; the kernel's vector
            # loads need aligned rows (a misaligned int8 weight crashed it), so the codes move once
            with torch.inference_mode(False), torch.no_grad():
                self.qweight = self.qweight.clone()
        key = self._storage_key()
        if self._kernel_weight is None or self._kernel_weight[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                if self.bits == 8:  # int8 codes as stored, one bf16 scale per row
                    tensors = (self.qweight, self.scales[:, 0].to(torch.bfloat16))
                else:  # two codes (q + 8) per byte, low nibble first -> the kernel's packed tiles
                    codes = torch.stack((self.qweight & 0x0F, self.qweight >> 4), dim=-1).view(self._rows, -1)
                    packed = _INT4_PACK(codes[:, : self._cols].to(torch.int32).contiguous(), 2)
                    # bf16 scales and activations: the kernel's fp32 path measured 29x slower at batch 1 here
                    scales = self.scales.to(torch.bfloat16).t()  # [groups, rows]
                    tensors = (packed, torch.stack([scales, torch.zeros_like(scales)], dim=-1).contiguous())
            self._kernel_weight = (key, tensors)
        return self._kernel_weight[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = None if torch.is_grad_enabled() else self._kernel_inputs()
        if kernel is None:
            return F.linear(x, self.dequantize(x.dtype if x.is_floating_point() else None))
        # bf16 activations: both kernels' fast path (fp32 takes a slow one)
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
        if self.bits == 8:
            out = _INT8_MM(flat, kernel[0], kernel[1])
        else:
            out = _INT4_MM(flat, kernel[0], self.group_size, kernel[1])
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, group_size={self.group_size}"


class QuantizedEmbedding(_QuantizedWeight):
    """An `nn.Embedding` whose table is stored in int8 or packed int4 with fp16 scales (one set per row)."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        bits: int = 8,
        group_size: int | None = None,
        padding_idx: int | None = None,
        device=None,
    ):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self._setup(num_embeddings, embedding_dim, bits, group_size, device)

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, bits: int, group_size: int | None = None) -> QuantizedEmbedding:
        module = cls(
            embedding.num_embeddings,
            embedding.embedding_dim,
            bits,
            group_size,
            padding_idx=embedding.padding_idx,
            device=embedding.weight.device,
        )
        return module.quantize_(embedding.weight)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or self._dequantized is not None:
            return F.embedding(ids, self.dequantize(), self.padding_idx)
        # only the looked-up rows are dequantized: no float copy of the table
        rows = ids.reshape(-1)
        return dequantize_weight(
            self.qweight[rows], self.scales[rows], self.bits, self.group_size, self._cols, self.compute_dtype
        ).view(*ids.shape, self._cols)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}, group_size={self.group_size}"


QUANTIZED_MODULES = (QuantizedLinear, QuantizedEmbedding)


def _eligible(module: nn.Module) -> bool:
    # Linears with a bias (the gated attention's tiny decay_proj) stay in float
    return (isinstance(module, nn.Linear) and module.bias is None) or isinstance(module, nn.Embedding)


def _swap(model: nn.Module, make) -> list[str]:
    names = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            new = make(child)
            if new is not None:
                setattr(parent, child_name, new)
                names.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    return names


def _record(model: nn.Module, spec: dict) -> None:
    config = getattr(model, "config", None)
    if config is not None:
        config.quantization = dict(spec)


def replace_with_quantized_(model: nn.Module, bits: int, group_size: int | None = None) -> list[str]:
    """Swap every bias-free `nn.Linear` and every `nn.Embedding` of `model` for an EMPTY quantized module of the
    same shape (zero codes, zero scales), in place; used when building a model to load a quantized checkpoint
    into. Records the scheme in `model.config.quantization` and returns the swapped module names."""
    spec = resolve_quantization(bits, group_size)

    def make(child):
        if isinstance(child, nn.Linear) and child.bias is None:
            return QuantizedLinear(child.in_features, child.out_features, device=child.weight.device, **spec)
        if isinstance(child, nn.Embedding):
            return QuantizedEmbedding(
                child.num_embeddings,
                child.embedding_dim,
                padding_idx=child.padding_idx,
                device=child.weight.device,
                **spec,
            )
        return None

    names = _swap(model, make)
    _record(model, spec)
    return names


def quantize_model_(model: nn.Module, bits: int, group_size: int | None = None) -> nn.Module:
    """Quantize the real weights of a float model in place (bias-free Linears, the LM head included, and every
    Embedding) and record `{"bits", "group_size"}` in `model.config.quantization`. Returns `model`."""
    spec = resolve_quantization(bits, group_size)
    if any(isinstance(m, QUANTIZED_MODULES) for m in model.modules()):
        raise ValueError("the model is already quantized; call dequantize_model_ first")

    def make(child):
        if isinstance(child, nn.Linear) and child.bias is None:
            return QuantizedLinear.from_linear(child, **spec)
        if isinstance(child, nn.Embedding):
            return QuantizedEmbedding.from_embedding(child, **spec)
        return None

    _swap(model, make)
    _record(model, spec)
    return model


def dequantize_model_(model: nn.Module) -> nn.Module:
    """Turn every quantized module back into a float `nn.Linear` / `nn.Embedding` holding the dequantized
    weight (used for ONNX export), and clear `model.config.quantization`. Returns `model`."""

    def make(child):
        if isinstance(child, QuantizedLinear):
            new = nn.Linear(child.in_features, child.out_features, bias=False, device=child.qweight.device)
        elif isinstance(child, QuantizedEmbedding):
            new = nn.Embedding(
                child.num_embeddings, child.embedding_dim, child.padding_idx, device=child.qweight.device
            )
        else:
            return None
        with torch.no_grad():
            new.weight.copy_(child.dequantize())
        return new

    _swap(model, make)
    config = getattr(model, "config", None)
    if config is not None:
        config.quantization = None
    return model


__all__ = [
    "DEFAULT_GROUP_SIZE",
    "QUANTIZED_MODULES",
    "QuantizedEmbedding",
    "QuantizedLinear",
    "dequantize_model_",
    "dequantize_weight",
    "quantize_model_",
    "quantize_weight",
    "replace_with_quantized_",
    "resolve_quantization",
]
