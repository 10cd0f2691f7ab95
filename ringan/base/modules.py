"""Small building blocks shared by the mixers and the model: RMSNorm, rotary embedding, short convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
    """RoPE angles from explicit positions, computed in float64: in fp32 the angle `position * frequency` loses
    ~1e-3 (relative, on the rotated vector) at 128k positions; in float64 the error stays below 1e-9. Nothing is
    stored (no buffer a dtype cast could round)."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids: [B, T] -> cos, signed sin: [B, 1, T, head_dim] (broadcast over heads); the sign of
        # rotate_half is folded into sin so that applying RoPE is two multiplies and one add
        exact = torch.float64 if position_ids.device.type in ("cpu", "cuda") else torch.float32  # MPS has no fp64
        exponents = torch.arange(0, self.head_dim, 2, device=position_ids.device, dtype=exact) / self.head_dim
        freqs = position_ids.to(exact).unsqueeze(-1) / (self.theta**exponents)
        cos, sin = freqs.cos().float(), freqs.sin().float()
        return torch.cat((cos, cos), dim=-1).unsqueeze(1), torch.cat((-sin, sin), dim=-1).unsqueeze(1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """RoPE (rotate-half convention): x * cos + rotate_half(x) * sin, in fp32."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return (x.float() * cos + torch.cat((x2, x1), dim=-1) * signed_sin).to(x.dtype)


class RinganShortConvolution(nn.Module):
    """Causal depthwise convolution over the last `kernel_size` tokens (H3 / Mamba / DeltaNet), optionally followed
    by SiLU. Its last `kernel_size - 1` inputs are part of the fixed-size cache, so decoding stays O(1) per token.

    Inputs at padding positions are zeroed first: a left-padded row then sees the same (zero) history as the
    same row alone.
    """

    def __init__(self, channels: int, kernel_size: int, activation: str | None = None):
        super().__init__()
        self.channels, self.kernel_size = channels, kernel_size
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        self.activation = activation

    def forward(
        self, x: torch.Tensor, token_mask: torch.Tensor | None = None, history: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: `[B, T, channels]`; history: `[B, channels, kernel_size - 1]` (earlier inputs) or `None` (zeros).
        Returns `(y [B, T, channels], new history)`."""
        batch, seq_len, _ = x.shape
        if token_mask is not None:
            x = x * token_mask.unsqueeze(-1).to(x.dtype)
        x = x.transpose(1, 2)  # [B, C, T]
        if history is None:
            history = x.new_zeros(batch, self.channels, self.kernel_size - 1)
        window = torch.cat([history.to(x.dtype), x], dim=-1)  # [B, C, K - 1 + T]
        y = F.conv1d(window, self.weight.to(x.dtype), groups=self.channels).transpose(1, 2)  # [B, T, C]
        if self.activation == "silu":
            y = F.silu(y)
        return y, window[..., window.shape[-1] - (self.kernel_size - 1) :]
