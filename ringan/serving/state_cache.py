"""Saved conversation states: what lets the next request of a conversation read only its new tokens.

A state is a batch-1 `RinganCache.state_dict()` (≈ 150 KB for Ringan-base, whatever the conversation's length)
with the number of tokens it has read. Keys are hex digests of the exact token ids (see `conversation.py`), so
a state is only ever continued by a request whose tokens begin with exactly the tokens it read.

`StateCache` keeps states in a memory LRU capped in bytes, and, when given one, in a second store that outlives
the process: a folder (`DiskStore`) or Redis (`RedisStore`). Writes to the second store happen on a writer
thread, so the decode loop never waits on a disk or a network; a second store that fails is counted and
skipped, never fatal (the server keeps serving from memory).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("ringan.serve")


@dataclass
class SavedState:
    """A conversation's recurrent state (`RinganCache.state_dict()` of one row) after `length` tokens."""

    tensors: dict[str, torch.Tensor]
    length: int

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        return save({k: v.contiguous() for k, v in self.tensors.items()})

    @classmethod
    def from_bytes(cls, blob: bytes) -> SavedState:
        from safetensors.torch import load

        tensors = load(blob)
        return cls(tensors, int(tensors["seen_tokens"][0]))  # the state's own count of the tokens it read


class DiskStore:
    """One safetensors file per key in a folder; written atomically (a reader never sees half a file)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        out = []
        for key in keys:
            path = self.folder / f"{key}.safetensors"
            out.append(path.read_bytes() if path.is_file() else None)
        return out

    def put(self, key: str, blob: bytes) -> None:
        path = self.folder / f"{key}.safetensors"
        tmp = path.with_name(f".{key}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, path)


class RedisStore:
    """States in Redis under `ringan:state:<key>`, expiring after `ttl` seconds. Short socket timeouts: a Redis
    that is down costs a request at most about a second, and `StateCache` then leaves it alone for a while."""

    def __init__(self, url: str, ttl: int = 7 * 24 * 3600, timeout: float = 0.5):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.ttl = ttl

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        return list(self.client.mget([f"ringan:state:{k}" for k in keys]))

    def put(self, key: str, blob: bytes) -> None:
        self.client.set(f"ringan:state:{key}", blob, ex=self.ttl)


class StateCache:
    """Memory LRU (capped at `max_bytes`) in front of an optional second store (`DiskStore`/`RedisStore`)."""

    RETRY_AFTER = 10.0  # seconds a failing second store is skipped before it is tried again

    def __init__(self, max_bytes: int, second=None, metrics=None):
        self.max_bytes = max_bytes
        self.second, self.metrics = second, metrics
        self._memory: OrderedDict[str, SavedState] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._writes: queue.Queue = queue.Queue(maxsize=1024)
        if second is not None:
            threading.Thread(target=self._writer, name="ringan-state-writer", daemon=True).start()

    @property
    def entries(self) -> int:
        return len(self._memory)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, keys: list[str]) -> tuple[str, SavedState] | None:
        """The first of `keys` (longest prefix first) that has a saved state, from memory or the second store."""
        with self._lock:
            for key in keys:
                if key in self._memory:
                    self._memory.move_to_end(key)
                    return key, self._memory[key]
        if self.second is None or not keys or time.monotonic() < self._down_until:
            return None
        try:
            blobs = self.second.get_many(keys)
            for key, blob in zip(keys, blobs):
                if blob is not None:
                    state = SavedState.from_bytes(blob)
                    self._remember(key, state)
                    return key, state
        except Exception as err:  # noqa: BLE001  (disk, network or a damaged blob: serve without it)
            self._failed("read", err)
        return None

    def put(self, key: str, state: SavedState) -> None:
        self._remember(key, state)
        if self.second is not None:
            try:
                self._writes.put_nowait((key, state))
            except queue.Full:  # the store is slower than the traffic: the memory copy still serves
                self._failed("write", RuntimeError("write queue full"))

    def _remember(self, key: str, state: SavedState) -> None:
        size = state.nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._memory.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._memory[key] = state
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._memory.popitem(last=False)
                self._bytes -= dropped.nbytes
                if self.metrics is not None:
                    self.metrics.inc("ringan_state_cache_evictions_total")

    def _writer(self) -> None:
        while True:
            key, state = self._writes.get()
            if time.monotonic() < self._down_until:
                continue
            try:
                self.second.put(key, state.to_bytes())
            except Exception as err:  # noqa: BLE001
                self._failed("write", err)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until queued writes reached the second store (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while not self._writes.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # the write taken off the queue last

    def _failed(self, what: str, err: Exception) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("state store %s failed (%s); using memory only for %.0f s", what, type(err).__name__, 10)
        self._down_until = time.monotonic() + self.RETRY_AFTER
        if self.metrics is not None:
            self.metrics.inc("ringan_state_store_errors_total")
