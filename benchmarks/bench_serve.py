"""`ringan serve` under load: streaming clients on loopback against a server in its own process.

Prints a markdown table (and with `--output`, writes it):

- total generated tokens/s, time to first token (TTFT) and inter-token latency p50/p95 at 1, 8, 32 and 128
  concurrent streaming clients; each client holds one conversation and keeps replying to it (so its turns
  continue from the saved state) for `--seconds`;
- a 200-turn conversation's per-turn latency with the state cache, and with it off (`--cache-mb 0`: every turn
  re-reads the whole history);
- bytes per cached conversation (the memory the server reports / the states it holds);
- errors with 200 concurrent clients (one reply each).

The clients (asyncio + httpx) share the machine with the server: on 2 cores their JSON parsing is part of what is
measured. Usage: `python benchmarks/bench_serve.py [--seconds 8] [--threads 1] [--output results/serve.md]`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "Liburan ke Bali"
CONTEXT = "Dua teman merencanakan liburan murah ke Bali bulan depan."
LINES = [
    "Kita naik apa ke sana?",
    "Oke, terus menginap di mana?",
    "Berapa biayanya kira-kira?",
    "Siapa lagi yang ikut?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`ringan serve --model base` in a subprocess."""

    def __init__(self, threads: int, cache_mb: int = 256):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["--model", "base", "--port", str(self.port), "--threads", str(threads), "--log-level", "warning"]
        args += ["--cache-mb", str(cache_mb), "--max-streams", "256", "--max-queue", "512"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen([sys.executable, "-m", "ringan", "serve", *args], env=env)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)

    def metric(self, name: str) -> float:
        found = re.search(rf"^{re.escape(name)} (\S+)$", httpx.get(f"{self.url}/metrics").text, re.M)
        return float(found.group(1)) if found else 0.0

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def turn(client: httpx.AsyncClient, url: str, history: list[dict], seed: int, stats: dict) -> str:
    """One streamed reply; records TTFT, inter-token gaps and tokens in `stats`."""
    body = {"model": "ringan-base", "messages": [{"role": "system", "content": CONTEXT}, *history], "topic": TOPIC,
            "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 64, "temperature": 0.8,
            "seed": seed}  # fmt: skip
    start = time.monotonic()
    last, text = None, []
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            stats["errors"] += 1
            await response.aread()
            return ""
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                stats["tokens"] += event["usage"]["completion_tokens"]
            if not event.get("choices") or not event["choices"][0]["delta"].get("content"):
                continue
            now = time.monotonic()
            if last is None:
                stats["ttft"].append(now - start)
            else:
                stats["gaps"].append(now - last)
            last = now
            text.append(event["choices"][0]["delta"]["content"])
    stats["latency"].append(time.monotonic() - start)
    return "".join(text)


async def clients(url: str, n: int, seconds: float) -> dict:
    stats = {"ttft": [], "gaps": [], "latency": [], "tokens": 0, "errors": 0}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)

    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def converse(i: int) -> None:
            history, k = [], 0
            while time.monotonic() < deadline:
                history.append({"role": "user", "name": "Budi", "content": LINES[(i + k) % len(LINES)]})
                try:
                    reply = await turn(client, url, history, i * 1000 + k, stats)
                except httpx.HTTPError:
                    stats["errors"] += 1
                    return
                history.append({"role": "assistant", "name": "Ringan", "content": reply or "..."})
                k += 1

        start = time.monotonic()
        await asyncio.gather(*(converse(i) for i in range(n)))
        stats["wall"] = time.monotonic() - start
    return stats


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def long_conversation(url: str, turns: int) -> dict:
    stats = {"ttft": [], "gaps": [], "latency": [], "tokens": 0, "errors": 0}
    history: list[dict] = []
    async with httpx.AsyncClient(timeout=300) as client:
        for k in range(turns):
            history.append({"role": "user", "name": "Budi", "content": LINES[k % len(LINES)]})
            reply = await turn(client, url, history, k, stats)
            history.append({"role": "assistant", "name": "Ringan", "content": reply or "..."})
    assert stats["errors"] == 0 and len(stats["ttft"]) == turns
    return stats


async def burst(url: str, n: int) -> int:
    stats = {"ttft": [], "gaps": [], "latency": [], "tokens": 0, "errors": 0}
    limits = httpx.Limits(max_connections=n + 8)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        history = [{"role": "user", "name": "Budi", "content": LINES[0]}]
        results = await asyncio.gather(
            *(turn(client, url, history, i, stats) for i in range(n)), return_exceptions=True
        )
    return stats["errors"] + sum(isinstance(r, Exception) for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of load per concurrency level")
    parser.add_argument("--levels", default="1,8,32,128")
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    out = [f"# `ringan serve` under load ({datetime.date.today()})", ""]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    out += [f"Machine: {platform.machine()}, {os.cpu_count()} cores ({platform.platform()}), load average {load} "
            f"at the start (other jobs share the machine), server threads "
            f"{args.threads}; Ringan-base (int8); clients on the same machine (asyncio + httpx, loopback); "
            f"{args.seconds:g} s per level; chat replies (max_tokens 64, temperature 0.8), each client continuing "
            "its own conversation.", ""]  # fmt: skip
    server = Served(args.threads)
    try:
        out += ["| streams | tokens/s | TTFT p50 | TTFT p95 | inter-token p50 | inter-token p95 | replies | errors |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for n in (int(x) for x in args.levels.split(",")):
            s = asyncio.run(clients(server.url, n, args.seconds))
            ms = lambda v: f"{v * 1000:.0f} ms"  # noqa: E731
            out.append(f"| {n} | {s['tokens'] / s['wall']:,.0f} | {ms(pct(s['ttft'], 50))} | {ms(pct(s['ttft'], 95))} "
                       f"| {ms(pct(s['gaps'], 50))} | {ms(pct(s['gaps'], 95))} | {len(s['latency'])} | {s['errors']} |")  # fmt: skip
            print(out[-1], flush=True)
        cached = asyncio.run(long_conversation(server.url, args.turns))
        entries, nbytes = server.metric("ringan_state_cache_entries"), server.metric("ringan_state_cache_bytes")
        errors = asyncio.run(burst(server.url, 200))
    finally:
        server.close()
    plain = Served(args.threads, cache_mb=0)
    try:
        resent = asyncio.run(long_conversation(plain.url, args.turns))
    finally:
        plain.close()
    out += ["", f"A {args.turns}-turn conversation (one client, the whole history sent every turn), mean of 10 "
            "turns: time to the first token, and to the whole reply (replies differ in length):", "",
            "| turns | TTFT, state cache | TTFT, history re-read (cache off) | reply, state cache | reply, re-read |",
            "|---|---:|---:|---:|---:|"]  # fmt: skip
    for start in sorted({0, args.turns // 2 - 5, args.turns - 10}):
        w = slice(max(start, 0), max(start, 0) + 10)
        mean = lambda values, w=w: f"{statistics.mean(values[w]) * 1000:.0f} ms"  # noqa: E731
        out.append(f"| {w.start + 1}–{w.stop} | {mean(cached['ttft'])} | {mean(resent['ttft'])} "
                   f"| {mean(cached['latency'])} | {mean(resent['latency'])} |")  # fmt: skip
    out += ["", f"Bytes per cached conversation: {nbytes / max(entries, 1):,.0f} ({entries:.0f} states, {nbytes:,.0f} "
            "bytes in memory).", "", f"200 concurrent clients, one reply each: {errors} errors.", ""]  # fmt: skip
    text = "\n".join(out)
    print(text)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
