"""Shared test helpers: tiny configs that keep every shipped default but the sizes, a relative error, and a
callback that kills a training run at a given step."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from transformers import TrainerCallback

from ringan import RinganConfig, RinganForCausalLM
from ringan.modeling.configuration_ringan import ATTENTION_TYPES as ALL_ATTENTION_TYPES

DEFAULT_ATTENTION = RinganConfig().attention_type
# every mixer, the shipped default first (cross-cutting tests are parametrized over this list)
ATTENTION_TYPES = sorted(ALL_ATTENTION_TYPES, key=lambda name: name != DEFAULT_ATTENTION)
LENGTHS = [1, 63, 64, 65, 200]
TINY_SIZES = dict(
    vocab_size=99, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_topics=5, num_contexts=7
)


def onnx_group(attention_types: list[str]) -> list:
    """Parameters for tests of `tiny_onnx`'s exports: each mixer's in one pytest-xdist group (`--dist loadgroup`),
    so its export is made once."""
    return [pytest.param(t, marks=pytest.mark.xdist_group(f"onnx-{t}")) for t in attention_types]


def tiny_config(attention_type: str = DEFAULT_ATTENTION, **overrides) -> RinganConfig:
    """The shipped defaults with tiny sizes (head_dim 8); `overrides` for what a test varies on purpose."""
    return RinganConfig(**{**TINY_SIZES, "attention_type": attention_type, **overrides})


def tiny_model(attention_type: str = DEFAULT_ATTENTION, seed: int = 0, **overrides) -> RinganForCausalLM:
    torch.manual_seed(seed)
    model = RinganForCausalLM(tiny_config(attention_type, **overrides)).eval()
    perturb_(model)
    return model


@torch.no_grad()
def perturb_(module: torch.nn.Module, scale: float = 0.3) -> None:
    """Random norms, decays, gates and biases, so that a wrong path cannot hide behind init values of 1 or 0."""
    for name, p in module.named_parameters():
        if any(key in name for key in ("norm", "decay", "beta", "A_log", "bias")):
            p.add_(torch.randn_like(p) * scale)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()


class KillAtStepCallback(TrainerCallback):
    """SIGKILLs the process right after optimizer step `step`: a crash at the worst moment, for resume tests."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def conditioning(model, batch: int, seed: int = 0, per_token: int | None = None) -> dict:
    """Conditioning inputs of the model's own form for a batch: `text` -> Topik/Konteks tokens of different
    lengths per row (padded, masked); `ids` -> distinct topic/context ids per row (per token over `per_token`
    positions, the id changing halfway, if given); `none` -> nothing."""
    g = torch.Generator().manual_seed(seed)
    config = model.config
    if config.conditioning == "text":
        vocab = config.vocab_size
        topic = torch.randint(4, vocab, (batch, 5), generator=g)
        context = torch.randint(4, vocab, (batch, 9), generator=g)
        mask = torch.ones_like(context)
        for row in range(batch):
            mask[row, 9 - (row % 4) :] = 0  # rows of different Konteks lengths
        return {"topic_input_ids": topic, "context_input_ids": context, "context_attention_mask": mask}
    if config.conditioning == "ids":
        topics = 1 + torch.arange(batch) % (config.num_topics - 1)
        contexts = 1 + (torch.arange(batch) + 2) % (config.num_contexts - 1)
        if per_token:
            half = per_token // 2
            topics = torch.cat(
                [
                    topics[:, None].expand(batch, half),
                    (topics[:, None] % (config.num_topics - 1) + 1).expand(batch, per_token - half),
                ],
                1,
            )
            contexts = contexts[:, None].expand(batch, per_token).clone()
        return {"topic_ids": topics, "context_ids": contexts}
    return {}


def select_rows(inputs: dict, rows) -> dict:
    """The conditioning inputs of some rows of a batch (`rows`: a slice or index tensor)."""
    return {k: v[rows] for k, v in inputs.items()}


def fake_hub(monkeypatch) -> dict:
    """`HfApi` without a network: `create_repo` answers a URL, `create_commit` records the paths it was given in
    the returned dict's `files`."""
    from huggingface_hub import HfApi

    pushed: dict = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: f"https://hf.co/{repo_id}")
    monkeypatch.setattr(
        HfApi,
        "create_commit",
        lambda self, repo_id, operations, **kw: pushed.update(files=[o.path_in_repo for o in operations]),
    )
    return pushed
