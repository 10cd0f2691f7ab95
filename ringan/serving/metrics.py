"""Counters, gauges and histograms written in the Prometheus text format (no client library: a handful of
numbers does not justify a dependency). Thread-safe: the decode thread and the event loop both record."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class Metrics:
    """Every metric of the server. `inc`/`observe` take a name declared in `__init__`; gauges are read from
    callables when `/metrics` is scraped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, tuple[str, dict[tuple, float]]] = {}
        self._histograms: dict[str, tuple[str, Sequence[float], dict[tuple, list]]] = {}
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        for name, text in (
            ("ringan_requests_total", "HTTP requests by endpoint and status code"),
            ("ringan_prompt_tokens_total", "prompt tokens of finished requests"),
            ("ringan_prefill_tokens_total", "prompt tokens the model read (those not taken from a saved state)"),
            ("ringan_cached_tokens_total", "prompt tokens taken from a saved state instead of being read"),
            ("ringan_completion_tokens_total", "generated tokens"),
            ("ringan_state_cache_hits_total", "requests that continued a saved state"),
            ("ringan_state_cache_misses_total", "requests that started from the beginning"),
            ("ringan_state_cache_evictions_total", "states dropped from memory to stay under the cap"),
            ("ringan_state_store_errors_total", "failed reads or writes of the disk or Redis store"),
        ):
            self._counters[name] = (text, {})
        for name, text, buckets in (
            ("ringan_request_latency_seconds", "time from a request's arrival to its last token", LATENCY_BUCKETS),
            ("ringan_time_to_first_token_seconds", "time from a request's arrival to its first token", LATENCY_BUCKETS),
            ("ringan_inter_token_seconds", "time between two tokens of one stream", LATENCY_BUCKETS),
            ("ringan_batch_size", "rows in each decode step", BATCH_BUCKETS),
        ):
            self._histograms[name] = (text, buckets, {})

    def gauge(self, name: str, text: str, read: Callable[[], float]) -> None:
        self._gauges[name] = (text, read)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            values = self._counters[name][1]
            values[key] = values.get(key, 0.0) + value

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        _, buckets, series = self._histograms[name]
        with self._lock:
            counts = series.setdefault(key, [[0] * len(buckets), 0.0, 0])
            index = bisect.bisect_left(buckets, value)
            if index < len(buckets):
                counts[0][index] += 1
            counts[1] += value
            counts[2] += 1

    def value(self, name: str, **labels: str) -> float:
        """A counter's value (tests and the benchmark read it)."""
        with self._lock:
            return self._counters[name][1].get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (text, values) in self._counters.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} counter"]
                lines += [f"{name}{_labels(dict(k))} {v:g}" for k, v in sorted(values.items())] or [f"{name} 0"]
            for name, (text, buckets, series) in self._histograms.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} histogram"]
                for key, (counts, total, n) in sorted(series.items()):
                    labels, running = dict(key), 0
                    for bound, count in zip(buckets, counts):
                        running += count
                        lines.append(f"{name}_bucket{_labels({**labels, 'le': f'{bound:g}'})} {running}")
                    lines.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {n}")
                    lines += [f"{name}_sum{_labels(labels)} {total:g}", f"{name}_count{_labels(labels)} {n}"]
        for name, (text, read) in self._gauges.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {read():g}"]
        return "\n".join(lines) + "\n"
