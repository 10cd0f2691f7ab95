"""Shared pieces of the speed benchmarks: the two models, threads, the header, fresh-process measurements,
markdown tables and log-log plots.

Every measurement runs in a FRESH Python process (``run_job``): the parent script never imports torch, so
that peaks do not leak from one size to the next. This matters on Linux because ``ru_maxrss`` survives
``execve``: a child started by a parent that already holds 1.5 GB reports a peak of at least 1.5 GB. The
child therefore also reports ``VmHWM`` (the high-water mark of its own address space, reset by exec); the
two agree as long as the parent stays small, and the table flags any row where they do not.

The worker protocol: ``python <script> --worker '<json job>'`` prints one line ``@@RESULT@@ <json>``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata as _md
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RESULT_MARK = "@@RESULT@@"
MODELS = ("ringan", "llama")
LABELS = {"ringan": "Ringan", "llama": "Llama (SDPA)", "ringan-bf16": "Ringan (bf16 autocast)"}

# Same shape for both models (the founding document's defaults).
VOCAB, HIDDEN, LAYERS, HEADS, FFN = 10000, 256, 2, 4, 1024
LLAMA_MAX_POSITIONS = 262144  # above the longest benchmarked length (131072): RoPE tables are cheap
SEED = 0
# RinganConfig overrides (``--ringan-config chunk_size=128``): set in the parent from the arguments, sent
# with every job and applied by ``build_model`` in the child, so config experiments need no code edit.
RINGAN_OVERRIDES: dict = {}


# ------------------------------------------------------------------------------------------ arguments


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads in every measuring process")
    p.add_argument("--quick", action="store_true", help="smoke run with small sizes (seconds); writes <name>_quick.*")
    p.add_argument("--models", default="ringan,llama", help="comma-separated subset of: ringan,llama")
    p.add_argument("--name", default=None, help="basename of the result files in benchmarks/results/")
    p.add_argument("--no-write", action="store_true", help="print the table only, write no result files")
    p.add_argument(
        "--ringan-config",
        default="",
        help="comma-separated RinganConfig overrides for experiments, e.g. chunk_size=128,prefill_segment_size=8192",
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one job in this process
    return p


def parse_models(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad:
        raise SystemExit(f"unknown model(s) {bad}; choose from {MODELS}")
    return models


def parse_sizes(text: str | None) -> list[int] | None:
    """``"1k,4096,128k"`` -> ``[1024, 4096, 131072]`` (``k`` = 1024)."""
    if text is None:
        return None
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        if item:
            out.append(int(item[:-1]) * 1024 if item.endswith("k") else int(item))
    return out


def parse_overrides(text: str) -> dict:
    """``"chunk_size=128,dropout=0"`` -> ``{"chunk_size": 128, "dropout": 0}`` (values parsed as JSON when possible)."""
    out = {}
    for item in text.split(","):
        if item.strip():
            key, _, value = item.partition("=")
            try:
                out[key.strip()] = json.loads(value)
            except json.JSONDecodeError:
                out[key.strip()] = value.strip()
    return out


def apply_common_args(args) -> None:
    """Parent side: remember the ``--ringan-config`` overrides so ``run_job`` sends them to every child."""
    RINGAN_OVERRIDES.clear()
    RINGAN_OVERRIDES.update(parse_overrides(args.ringan_config))


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


# ------------------------------------------------------------------------------------------ models (child side)


def set_threads(threads: int) -> int:
    """The package's `set_threads` (intra-op threads, what every `ringan` verb's `--threads` sets), plus the
    inter-op pool when that can still be set; returns the intra-op count in use."""
    import torch

    from ringan.commands.common import set_threads as set_torch_threads

    used = set_torch_threads(threads)
    if threads > 0:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # only settable before the first parallel work
            pass
    return used


def ringan_config(**overrides):
    from ringan import RinganConfig

    # the FFN stays the default's: its gated (SwiGLU) MLP of width 688 has the parameters of Llama's at 1024
    values = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS)
    return RinganConfig(**(values | overrides))


def llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=LLAMA_MAX_POSITIONS,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def build_model(name: str, train: bool = False):
    """Ringan (default config) or a same-size LlamaForCausalLM, fp32, seeded, in eval (or train) mode."""
    import torch

    torch.manual_seed(SEED)
    if name == "ringan":
        from ringan import RinganForCausalLM

        model = RinganForCausalLM(ringan_config(**RINGAN_OVERRIDES))
    elif name == "llama":
        from transformers import LlamaForCausalLM

        model = LlamaForCausalLM(llama_config())
        assert model.config._attn_implementation == "sdpa", model.config._attn_implementation
    else:
        raise ValueError(name)
    model = model.float()
    model.train(train)
    return model


def count_params(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    embed = sum(m.weight.numel() for m in model.modules() if type(m).__name__ == "Embedding")
    return {"params": total, "params_non_embedding": total - embed}


def random_ids(batch: int, length: int, seed: int = 1):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=g)  # avoid pad/bos/eos


# ------------------------------------------------------------------------------------------ memory (child side)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_mb() -> float:
    """Current resident set size of this process (MiB)."""
    return _status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    """Peak RSS of this process so far (MiB): ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hwm_mb() -> float:
    """``VmHWM``: the high-water RSS of this process's own address space (not inherited across exec)."""
    return _status_kb("VmHWM") / 1024


def memory_report(loaded_mb: float) -> dict:
    peak, hwm = peak_rss_mb(), hwm_mb()
    return {
        "loaded_rss_mb": loaded_mb,
        "peak_rss_mb": peak,
        "vmhwm_mb": hwm,
        "peak_above_loaded_mb": peak - loaded_mb,
        "peak_inherited": peak > hwm + 16,  # ru_maxrss includes the parent's peak: flag it
    }


def timed(fn, min_time: float = 1.0, max_reps: int = 5) -> dict:
    """Run ``fn`` at least once; repeat while the total is under ``min_time`` (at most ``max_reps``).

    ``fn``'s return value is dropped at once (so a repeat never holds two outputs). Returns the best
    (minimum) and median seconds: on a shared machine the minimum is the least disturbed run.
    """
    times: list[float] = []
    while True:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if sum(times) >= min_time or len(times) >= max_reps:
            break
    s = sorted(times)
    return {"best_s": s[0], "median_s": s[len(s) // 2], "reps": len(times)}


# ------------------------------------------------------------------------------------------ fresh processes


def worker_main(args, handlers: dict) -> None:
    """Child side: run the job given by ``--worker`` and print its result line."""
    job = json.loads(args.worker)
    RINGAN_OVERRIDES.clear()
    RINGAN_OVERRIDES.update(job.get("ringan_config", {}))
    used = set_threads(job["threads"])
    t0 = time.perf_counter()
    out = handlers[job["kind"]](job)
    out["threads_used"] = used
    out["worker_wall_s"] = time.perf_counter() - t0
    print(RESULT_MARK, json.dumps(out), flush=True)


def run_job(script: str | Path, job: dict, threads: int, timeout: float | None = None) -> dict:
    """Parent side: run one job in a fresh ``python <script> --worker`` process and return its result dict.

    The child gets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = ``threads`` as well as ``torch.set_num_threads``.
    On failure returns ``{"error": ...}`` instead of raising, so one bad size does not lose the table.
    """
    job = {**job, "threads": threads, "ringan_config": dict(RINGAN_OVERRIDES)}
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("PYTHONWARNINGS", "ignore")
    cmd = [sys.executable, str(script), "--worker", json.dumps(job)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "process_wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            out = json.loads(line[len(RESULT_MARK) :])
            out["process_wall_s"] = wall
            return out
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail), "process_wall_s": wall}


def log(msg: str) -> None:
    print(f"[{_dt.datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ header


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(pkg: str) -> str:
    try:
        return _md.version(pkg)
    except _md.PackageNotFoundError:
        return "not installed"


def header_lines(threads: int, extra: dict | None = None) -> list[str]:
    """Machine and software facts, without importing torch in this (parent) process."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        mem = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except Exception:  # psutil is optional
        physical, mem = None, "?"
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    flags = " ".join(x for x in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if x in have)
                    break
    except OSError:
        pass
    rows = {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "CPU": f"{cpu_model()} ({flags})" if flags else cpu_model(),
        "cores": f"{os.cpu_count()} logical" + (f", {physical} physical" if physical else ""),
        "memory": mem,
        "load average at start (1/5/15 min)": load,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "threads (torch.set_num_threads, OMP_NUM_THREADS)": str(threads),
        "command": f"`{command_line()}`",
    }
    if RINGAN_OVERRIDES:
        rows["RinganConfig overrides (--ringan-config)"] = ", ".join(f"{k}={v}" for k, v in RINGAN_OVERRIDES.items())
    rows.update(extra or {})
    return [f"- **{k}**: {v}" for k, v in rows.items()]


def _ringan_default(name: str):
    """A RinganConfig default, read without importing torch (the parent process never imports it)."""
    import re
    from pathlib import Path

    source = (Path(__file__).resolve().parents[1] / "ringan/modeling/configuration_ringan.py").read_text()
    return re.search(rf"^    {name}: [^=]+= (.+?)  #", source, flags=re.M).group(1).strip('"')


def models_line() -> str:
    return (
        f"Both models: vocab {VOCAB}, width {HIDDEN}, {LAYERS} layers, {HEADS} heads, fp32, untied head, "
        "random init (seed 0), random token ids. Ringan = `RinganForCausalLM(RinganConfig())` (the default "
        f"`{_ringan_default('attention_type')}` mixer, short convolution {_ringan_default('conv_size')}, chunk "
        f"{_ringan_default('chunk_size')}, prefill segments of {_ringan_default('prefill_segment_size')}, SwiGLU FFN "
        f"{_ringan_default('intermediate_size')}; `--ringan-config` overrides are listed in the header); Llama = "
        f"`LlamaForCausalLM` with SDPA attention (SwiGLU FFN {FFN})."
    )


# ------------------------------------------------------------------------------------------ output


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return f"{x:,}"
    ax = abs(x)
    if ax == 0:
        return "0"
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.{max(digits - 1, 0)}f}"
    return f"{x:.{digits}g}"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def result_paths(name: str, quick: bool) -> tuple[Path, Path]:
    base = f"{name}_quick" if quick else name
    return RESULTS_DIR / f"{base}.md", RESULTS_DIR / f"{base}.png"


def close_report(header: list[str], body: list[str], summary: list[str], notes: list[str], total_s: float) -> str:
    """Append the errors and the run's wall time to a report, print it, and return its text (without header)."""
    summary = summary + (["", "Errors:"] + [f"- {n}" for n in notes] if notes else [])
    summary.append(f"\nTotal wall time of this run: {total_s:.0f} s.")
    text = "\n".join(body + summary)
    print("\n".join(header) + "\n\n" + text)
    return text


def write_markdown(path: Path, title: str, header: list[str], body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"# {title}\n\n" + "\n".join(header) + "\n\n" + body.rstrip() + "\n"
    path.write_text(text)


def loglog_plot(path: Path, panels: list[dict], title: str) -> None:
    """One figure, one log-log panel per dict: ``{"series": {label: (xs, ys)}, "xlabel", "ylabel", "title"}``.

    Missing points (``None``) are dropped; a series with no point left is not drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    markers = {"Ringan": "o", "Llama (SDPA)": "s"}
    for ax, panel in zip(axes[0], panels):
        for label, (xs, ys) in panel["series"].items():
            pts = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None and y > 0]
            if pts:
                ax.plot(*zip(*pts), marker=markers.get(label, "^"), label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        ax.set_title(panel.get("title", ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def k_label(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 and n >= 1024 else str(n)
