"""Break the model's math on purpose, once per mutation, and check that the test suite notices.

Each mutation replaces one exact piece of source text in a scratch copy of the package (the checkout is never
touched) and runs the model tests there, stopping at the first failure. A mutation the suite does not notice
("SURVIVED") means a missing test. Run from the repository root:

    python tests/mutation_check.py            # every mutation
    python tests/mutation_check.py --list     # what they are
    python tests/mutation_check.py rope_numerator padding_position

Exit status 1 if any mutation survives (or no longer applies: the source it targets changed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/test_kernels.py",
    "tests/test_mixers.py",
    "tests/test_modeling.py",
    "tests/test_conditioning.py",
    "tests/test_fused_step.py",
]

# name: (file, exact text, replacement, what the mutation breaks)
MUTATIONS = {
    "rope_numerator": (
        "ringan/modeling/mixer_linear.py",
        "(apply_rotary(phi_q, cos, sin), apply_rotary(phi_k, cos, sin)) if self.use_rope else (phi_q, phi_k)",
        "(phi_q, phi_k)",
        "linear: RoPE removed from the numerator",
    ),
    "linear_normaliser": (
        "ringan/modeling/mixer_linear.py",
        "out = (numerator.float() / (denominator + 1e-6)).to(v.dtype)",
        "out = numerator.to(v.dtype)",
        "linear: the normaliser dropped",
    ),
    "per_token_ids": (
        "ringan/modeling/modeling_ringan.py",
        "        emb = table(ids)\n",
        "        emb = table(ids[:, :1].expand_as(ids) if ids.dim() == 2 else ids)\n",
        "per-token topic/context ids collapsed to the first column",
    ),
    "step_decay_linear": (
        "ringan/modeling/ops_linear_attention.py",
        "state = torch.addcmul(kv, state, decay)",
        "state = state + kv",
        "linear-attention recurrent step ignores the decay",
    ),
    "step_decay_delta": (
        "ringan/modeling/ops_delta_rule.py",
        "        state = state * log_decay.float().exp()[..., None, None]\n",
        "        state = state\n",
        "delta-rule recurrent step ignores the decay",
    ),
    "segment_state": (
        "ringan/modeling/modeling_ringan.py",
        "piece = dict(inputs, cache=cache, use_cache=True)",
        "piece = dict(inputs, cache=RinganCache(len(self.model.layers), batch, source.device), use_cache=True)",
        "segmented prefill drops the state between segments",
    ),
    "padding_position": (
        "ringan/modeling/modeling_ringan.py",
        "steps = (token_mask.long().cumsum(-1) - 1).clamp(min=0)",
        "steps = torch.arange(seq_len, device=device).expand(batch, seq_len)",
        "padding tokens advance the RoPE position",
    ),
    "delta_state_correction": (
        "ringan/modeling/ops_delta_rule.py",
        "u = u_n - w_n @ state",
        "u = u_n",
        "chunked delta rule ignores the incoming state when writing",
    ),
    "delta_chunk_decay": (
        "ringan/modeling/ops_delta_rule.py",
        "        scores = scores * pair\n",
        "        scores = scores\n",
        "chunked gated delta rule drops the in-chunk decay of the output",
    ),
    "delta_beta_step": (
        "ringan/modeling/ops_delta_rule.py",
        "written = beta.unsqueeze(-1) * (v - stored)",
        "written = v - stored",
        "delta-rule recurrent step ignores beta",
    ),
    "delta_key_norm": (
        "ringan/modeling/mixer_delta.py",
        "k = F.normalize(k.float(), dim=-1)",
        "k = k.float()",
        "delta mixer: keys not L2-normalised",
    ),
    # (Not a mutation here: gated delta decaying the state at padding. Padding is allowed only before a row's
    # first token, where the state is still zero, or after its last, where the cache is refused; no supported input
    # can tell the difference.)
    "padded_cache_continued": (
        "ringan/modeling/modeling_ringan.py",
        "cache.padded_rows = cache.padded_rows.to(device) | padded",
        "pass",
        "a cache that read right padding can be continued (silently wrong)",
    ),
    "conv_history": (
        "ringan/modeling/modules.py",
        "window = torch.cat([history.to(x.dtype), x], dim=-1)",
        "window = torch.cat([torch.zeros_like(history).to(x.dtype), x], dim=-1)",
        "short convolution forgets its cached inputs between calls",
    ),
    "text_pool_padding": (
        "ringan/modeling/modeling_ringan.py",
        "weights = mask.to(embed_tokens.weight.dtype).unsqueeze(-1)",
        "weights = torch.ones_like(mask).to(embed_tokens.weight.dtype).unsqueeze(-1)",
        "text conditioning pools over the padding of the Topik/Konteks tokens",
    ),
    "cache_condition": (
        "ringan/modeling/modeling_ringan.py",
        "            condition = cache.condition  # the conversation's vector, kept from its first call\n",
        "            condition = None\n",
        "a continued conversation loses its conditioning vector",
    ),
    "fused_decay": (
        "ringan/modeling/fused_step.py",
        "s = s * torch.exp(self.neg_a * F.softplus(gates[:, heads:]))[..., None, None]",
        "pass",
        "fused decode step: the gated delta rule's decay dropped",
    ),
    "fused_conv_window": (
        "ringan/modeling/fused_step.py",
        'state["conv"] = window[..., 1:]',
        'state["conv"] = window[..., :-1]',
        "fused decode step: the convolution keeps the wrong end of its window",
    ),
    "fused_position": (
        "ringan/modeling/fused_step.py",
        "cache.seen_tokens = cache.seen_tokens + 1",
        "cache.seen_tokens = cache.seen_tokens",
        "fused decode step: the RoPE position does not advance",
    ),
}


def run(name: str, timeout: int) -> tuple[str, str, float]:
    path, old, new, _ = MUTATIONS[name]
    with tempfile.TemporaryDirectory(prefix=f"ringan-mutant-{name}-") as tmp:
        scratch = Path(tmp)
        shutil.copytree(ROOT / "ringan", scratch / "ringan")
        shutil.copytree(ROOT / "tests", scratch / "tests")
        shutil.copy(ROOT / "pyproject.toml", scratch / "pyproject.toml")
        target = scratch / path
        source = target.read_text()
        if source.count(old) != 1:
            return "NOT APPLIED", f"the text to mutate occurs {source.count(old)} times in {path}", 0.0
        target.write_text(source.replace(old, new))
        env = {**os.environ, "PYTHONPATH": str(scratch), "HF_HUB_OFFLINE": "1"}
        start = time.time()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS],
                cwd=scratch,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return "TIMEOUT", f"no verdict within {timeout} s", time.time() - start
        seconds = time.time() - start
        failed = [line.split(" ")[1] for line in result.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
        if result.returncode == 0:
            return "SURVIVED", "every test passed", seconds
        return "killed", failed[0] if failed else result.stdout.strip().splitlines()[-1], seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--timeout", type=int, default=1200)
    args = parser.parse_args()
    if args.list:
        for name, (path, *_, what) in MUTATIONS.items():
            print(f"{name:<24} {path:<40} {what}")
        return 0
    names = args.names or list(MUTATIONS)
    unknown = sorted(set(names) - set(MUTATIONS))
    if unknown:
        parser.error(f"unknown mutation(s): {', '.join(unknown)}")
    print("| mutation | what it breaks | verdict | first failing test | seconds |\n| --- | --- | --- | --- | --- |")
    survivors = 0
    for name in names:
        verdict, detail, seconds = run(name, args.timeout)
        survivors += verdict != "killed"
        print(f"| {name} | {MUTATIONS[name][3]} | {verdict} | {detail} | {seconds:.0f} |", flush=True)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
