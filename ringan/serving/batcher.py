"""Continuous batching: one decode thread runs every stream's next token in one batched step.

A request becomes a `Job`. The thread reads each new job's prompt (from a saved state when one matched) in
chunks of `prefill_chunk` tokens between decode steps, so a long prompt delays the running streams by one chunk
at a time; its first token is drawn and it joins the batch (its batch-1 `RinganCache` concatenated to the
batch's). Every step feeds each row its last token (`TorchStep.step`, the fused delta-rule step) and draws the
next with the row's own temperature, top-p and random generator, so a row's text does not depend on who shares
its batch. Rows that finish (end of turn, `max_tokens`, cancelled: a stop sequence or a client gone) leave before
the next step (`TorchStep.keep_rows`), and their state goes to `on_finished` (the state cache).

The thread never waits on a client: tokens are handed to `notify` (the app posts them to the event loop), so a
slow reader only lets its own queue grow, bounded by its `max_tokens`.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..decoding import TorchStep
from .conversation import Prompt

log = logging.getLogger("ringan.serve")
REDRAWS = 8  # draws per row and step before a top-p row settles for its most likely token


class QueueFull(Exception):
    """Every row and every queue place is taken (answered with 429)."""


@dataclass(eq=False)
class Job:
    """One request's generation: set by the app, advanced by the decode thread."""

    prompt: Prompt
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    start: object | None = None  # a `SavedState` to continue from (it has read `prompt.ids[:cached]`)
    cached: int = 0
    stop_ids: frozenset = frozenset()
    cancelled: bool = False  # set by the app; the row leaves before the next step
    generated: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_state: dict | None = None  # the state right after the prompt (what a non-canonical reply leaves)
    sink: object | None = None  # where the app receives this job's events
    conversation_key: str | None = None  # also save the state under this name (`conversation_id`)
    stopped_by_text: bool = False  # a stop sequence ended it (the app cancels it)
    arrived: float = 0.0
    _cache: object | None = None
    _fed: int = 0
    _uniform: random.Random | None = None


def merge_caches(caches: list, num_layers: int):
    """One `RinganCache` holding the rows of `caches` in order (each has read only its own tokens, unpadded)."""
    from ..modeling.modeling_ringan import RinganCache

    dicts = [c.state_dict() for c in caches]
    rows = sum(int(d["seen_tokens"].shape[0]) for d in dicts)
    merged = RinganCache(num_layers, rows)
    merged.seen_tokens = torch.cat([d["seen_tokens"] for d in dicts])
    conditions = [d.get("condition") for d in dicts]
    if any(c is not None for c in conditions):
        like = next(c for c in conditions if c is not None)
        # a row without a vector (a completion with no Topik/Konteks) adds nothing: zeros do the same
        parts = [c if c is not None else like.new_zeros((d["seen_tokens"].shape[0], *like.shape[1:])) for c, d in
                 zip(conditions, dicts)]  # fmt: skip
        merged.condition = torch.cat([p.expand(p.shape[0], 1, -1) for p in parts])
    for i in range(num_layers):
        names = [k[len(f"layers.{i}.") :] for k in dicts[0] if k.startswith(f"layers.{i}.")]
        merged.states[i] = {name: torch.cat([d[f"layers.{i}.{name}"] for d in dicts]) for name in names} or None
    return merged


def row_state(cache, row: int) -> dict:
    """A batch-1 copy of one row's state (the batch's tensors are updated in place by the next steps)."""
    return {k: v[row : row + 1].clone() for k, v in cache.state_dict().items()}


def cache_from_state(tensors: dict, num_layers: int):
    from ..modeling.modeling_ringan import RinganCache

    return RinganCache.from_state_dict(tensors, num_layers)


def draw(logits: torch.Tensor, jobs: list[Job]) -> list[int]:
    """The next token of each row: greedy where `temperature` is 0, else a draw from the row's softmax at its
    temperature within its top-p nucleus, with uniform numbers from the row's own generator.

    The nucleus is sampled by rejection, not by sorting the vocabulary (a sort of 128 x 10,000 costs more than a
    decode step on 2 cores): draw from the whole distribution, keep the token when the mass of the tokens more
    likely than it is below `top_p` (it is then in the nucleus), else draw again. Accepted draws follow the
    distribution restricted to the nucleus exactly; after `REDRAWS` misses (a nucleus of under ~30% of the mass)
    a row takes its most likely token."""
    logits = logits.float()
    sampled = [i for i, job in enumerate(jobs) if job.temperature > 0]
    if len(sampled) < len(jobs):
        tokens = torch.from_numpy(logits.numpy().argmax(-1))  # numpy's argmax: ~10x torch's on CPU
    if not sampled:
        return tokens.tolist()
    every = len(sampled) == len(jobs)
    index = torch.tensor(sampled)
    temps = torch.tensor([jobs[i].temperature for i in sampled])[:, None]
    probs = ((logits if every else logits[index]) / temps).softmax(-1)  # no copy of the rows when all sample
    cumulative = probs.cumsum(-1)
    top_p = torch.tensor([jobs[i].top_p for i in sampled])
    chosen = torch.zeros(len(sampled), dtype=torch.long)
    pending = torch.arange(len(sampled))
    for _ in range(REDRAWS):
        uniforms = torch.tensor([jobs[sampled[int(r)]]._uniform.random() for r in pending], dtype=cumulative.dtype)
        rows = cumulative[pending]
        position = torch.searchsorted(rows, (uniforms * rows[:, -1])[:, None], right=True)
        position = position.clamp(max=probs.shape[-1] - 1)
        chosen[pending] = position[:, 0]
        nucleus = top_p[pending] < 1
        if not bool(nucleus.any()):
            pending = pending[:0]
            break
        p = probs[pending]
        mass_above = torch.where(p > p.gather(1, position), p, 0).sum(-1)
        pending = pending[nucleus & (mass_above >= top_p[pending])]
        if not len(pending):
            break
    if len(pending):
        chosen[pending] = probs[pending].argmax(-1)
    if every:
        return chosen.tolist()
    tokens[index] = chosen
    return tokens.tolist()


class Engine:
    """The decode loop (a daemon thread) over every running job."""

    def __init__(
        self,
        model,
        max_streams: int,
        max_queue: int,
        notify: Callable[[list[tuple[Job, str, object]]], None],
        on_finished: Callable[[Job, dict | None], None],
        metrics=None,
        prefill_chunk: int = 256,
        prefill_seconds: float = 0.02,
    ):
        self.backend = TorchStep(model)
        self.num_layers = model.config.num_hidden_layers
        self.vocab = model.config.vocab_size
        self.max_streams, self.max_queue = max_streams, max_queue
        self.notify, self.on_finished, self.metrics = notify, on_finished, metrics
        self.prefill_chunk, self.prefill_seconds = prefill_chunk, prefill_seconds
        self._inbox: collections.deque[Job] = collections.deque()
        self._prefilling: list[Job] = []
        self._rows: list[Job] = []
        self._cache = None
        self._tokens: list[int] = []
        self._wake = threading.Event()
        self._stop = False
        self.steps = 0
        self._thread = threading.Thread(target=self._run, name="ringan-decode", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        return len(self._rows)

    @property
    def waiting(self) -> int:
        return len(self._inbox) + len(self._prefilling)

    def submit(self, job: Job) -> None:
        if self.active + self.waiting >= self.max_streams + self.max_queue:
            raise QueueFull
        seed = job.seed if job.seed is not None else random.getrandbits(63)
        job._uniform = random.Random(seed)  # per row: its draws do not depend on its batch
        if job.start is not None:
            job._cache = cache_from_state(job.start.tensors, self.num_layers)
            job._fed = job.cached
        self._inbox.append(job)
        self._wake.set()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stop:
                try:
                    events: list[tuple[Job, str, object]] = []
                    self._prefill(events)
                    if self._rows:
                        self._step(events)
                    if events:
                        self.notify(events)
                    if not self._rows and not self._inbox and not self._prefilling:
                        self._wake.wait(0.1)
                        self._wake.clear()
                except Exception:  # noqa: BLE001  (a bug must not leave every client hanging)
                    log.exception("decode loop failed; failing its requests")
                    failed = self._rows + self._prefilling
                    self._rows, self._prefilling, self._cache, self._tokens = [], [], None, []
                    self.notify([(job, "error", "internal error in the decode loop") for job in failed])

    def _prefill(self, events: list) -> None:
        """Read prompt chunks of waiting jobs (for about `prefill_seconds` between two steps, one chunk of a job at a
        time), then let the jobs whose prompt is read join the batch."""
        while self._inbox and len(self._rows) + len(self._prefilling) < self.max_streams:
            self._prefilling.append(self._inbox.popleft())
        started, joining = time.perf_counter(), []
        for job in list(self._prefilling):
            # a prompt read costs ~10 ms however short it is: cap the time the running streams wait for them
            if time.perf_counter() - started > self.prefill_seconds and (self._rows or joining):
                break
            if job.cancelled:
                self._prefilling.remove(job)
                continue
            # chunk bounds fixed from the job's own start: its numbers do not depend on other jobs
            end = min(len(job.prompt.ids), job._fed + self.prefill_chunk)
            ids = torch.tensor([job.prompt.ids[job._fed : end]], dtype=torch.long)
            conditioning = job.prompt.conditioning if job._cache is None else {}
            logits, job._cache = self.backend.prefill(ids, None, conditioning, job._cache)
            job._fed = end
            if end < len(job.prompt.ids):
                continue
            self._prefilling.remove(job)
            job.prompt_state = job._cache.state_dict()  # joining copies it; nothing writes these tensors again
            token = draw(logits[:, : self.vocab], [job])[0]
            if self._emit(job, token, events):
                joining.append((job, token))
        if joining:
            caches = ([self._cache] if self._cache is not None else []) + [job._cache for job, _ in joining]
            self._cache = merge_caches(caches, self.num_layers)
            for job, token in joining:
                job._cache = None
                self._rows.append(job)
                self._tokens.append(token)

    def _emit(self, job: Job, token: int, events: list) -> bool:
        """Record a job's new token; whether it goes on."""
        job.generated.append(token)
        events.append((job, "token", token))
        if token in job.stop_ids:
            job.finish_reason = "stop"
        elif len(job.generated) >= job.max_tokens:
            job.finish_reason = "length"
        elif job.cancelled:
            job.finish_reason = "cancelled"
        if job.finish_reason is None:
            return True
        # the state has read the prompt and every generated token but the last (never fed)
        state = job._cache.state_dict() if job._cache is not None else None
        self._finish(job, state, events)
        return False

    def _finish(self, job: Job, state: dict | None, events: list) -> None:
        try:
            self.on_finished(job, None if job.finish_reason == "cancelled" else state)
        except Exception:  # noqa: BLE001  (saving a state is an optimisation; the reply stands)
            log.exception("saving a conversation state failed")
        events.append((job, "end", job.finish_reason))

    def _step(self, events: list) -> None:
        keep = [i for i, job in enumerate(self._rows) if not job.cancelled]
        for job in self._rows:
            if job.cancelled:
                job.finish_reason = "cancelled"
                self._finish(job, None, events)
        if len(keep) < len(self._rows):
            self._select(keep)
        if not self._rows:
            return
        if self.metrics is not None:
            self.metrics.observe("ringan_batch_size", len(self._rows))
        tokens = torch.tensor(self._tokens, dtype=torch.long)
        logits, self._cache = self.backend.step(tokens, self._cache)
        self.steps += 1
        new = draw(logits[:, : self.vocab], self._rows)
        keep = []
        for i, (job, token) in enumerate(zip(self._rows, new)):
            if job.finish_reason is None and not job.cancelled:
                if token in job.stop_ids or len(job.generated) + 1 >= job.max_tokens:
                    job._cache = _RowView(self._cache, i)  # its state, taken before rows leave
                if self._emit(job, token, events):
                    keep.append(i)
                job._cache = None
            elif job.finish_reason is None:  # cancelled by the app while this step ran
                job.finish_reason = "cancelled"
                self._finish(job, None, events)
            self._tokens[i] = token
        if len(keep) < len(self._rows):
            self._select(keep)

    def _select(self, keep: list[int]) -> None:
        self._rows = [self._rows[i] for i in keep]
        self._tokens = [self._tokens[i] for i in keep]
        if not keep:
            self._cache = None
            return
        self._cache = self.backend.keep_rows(self._cache, torch.tensor(keep, dtype=torch.long))


class _RowView:
    """`state_dict()` of one row of the batch cache, copied (what `_emit` saves for a finishing job)."""

    def __init__(self, cache, row: int):
        self.cache, self.row = cache, row

    def state_dict(self) -> dict:
        return row_state(self.cache, self.row)
