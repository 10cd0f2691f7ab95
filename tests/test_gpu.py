"""The optional CUDA fast path (flash-linear-attention's Triton kernels) against the pure-PyTorch path.
Skipped without CUDA or without fla; run on a GPU machine with `pytest tests/test_gpu.py`."""

from __future__ import annotations

import pytest
import torch

from ringan.modeling import ops_linear_attention as ops

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or ops._FLA_KERNEL is None, reason="needs CUDA and flash-linear-attention"
)


def torch_path(*args):
    kernel, ops._FLA_KERNEL = ops._FLA_KERNEL, None
    try:
        return ops.chunk_linear_attention(*args)
    finally:
        ops._FLA_KERNEL = kernel


@pytest.mark.parametrize("decay", ["none", "constant", "data"])
@pytest.mark.parametrize("length", [1, 63, 64, 65, 200, 4096])
def test_fla_kernel_matches_pytorch(decay, length):
    torch.manual_seed(0)
    b, h, d = 2, 4, 64
    q, k, v = (torch.randn(b, h, length, d, device="cuda") * 0.3 for _ in range(3))
    log_decay = {
        "none": None,
        "constant": torch.tensor([0.97, 0.997, 0.9997, 0.99997], device="cuda").log(),
        "data": torch.nn.functional.logsigmoid(torch.randn(b, h, length, device="cuda")) / 16,
    }[decay]
    state0 = torch.randn(b, h, d, d, device="cuda") * 0.1
    with torch.no_grad():  # fla serves inference; training keeps the PyTorch path
        fast_out, fast_state = ops.chunk_linear_attention(q, k, v, log_decay, state0)
    ref_out, ref_state = torch_path(q, k, v, log_decay, state0)
    scale = ref_out.abs().max()
    assert (fast_out - ref_out).abs().max() / scale < 2e-3  # fla keeps tf32/bf16-friendly matmuls
    assert (fast_state - ref_state).abs().max() / ref_state.abs().max() < 2e-3


@pytest.mark.parametrize("attention_type", ["linear", "retention", "gated", "delta", "gated_delta"])
def test_model_on_gpu_matches_cpu(attention_type):
    from ringan import RinganConfig, RinganForCausalLM

    torch.manual_seed(0)
    config = RinganConfig(vocab_size=500, attention_type=attention_type, dropout=0.0)
    model = RinganForCausalLM(config).eval()
    ids = torch.randint(4, 500, (2, 700))
    with torch.no_grad():
        cpu = model(ids, topic_ids=torch.tensor([1, 2])).logits
        gpu = model.cuda()(ids.cuda(), topic_ids=torch.tensor([1, 2]).cuda()).logits.cpu()
        generated = model.generate(ids[:, :20].cuda(), max_new_tokens=8, do_sample=False)
    assert (gpu - cpu).abs().max() / cpu.abs().max() < 5e-3
    assert generated.shape == (2, 28)
