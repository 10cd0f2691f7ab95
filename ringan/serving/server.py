"""What the routes stand on: the model, its decode loop (`Engine`), the state cache and the metrics.

A chat request's prompt is looked up in the state cache (longest saved prefix first); its job goes to the decode
thread, whose tokens come back to the event loop through `_notify`; when the job ends, `_on_finished` saves the
conversation's state under the key the next turn will look for.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

import torch
from starlette.requests import Request

from ..tokenization import end_of_turn_ids
from .batcher import Engine, Job, QueueFull
from .conversation import PromptBuilder, model_fingerprint
from .metrics import Metrics
from .protocol import ApiError, Limits
from .replies import ReplyText
from .state_cache import SavedState, StateCache

log = logging.getLogger("ringan.serve")


class Server:
    """The model, its decode loop and its state cache, behind the routes of `app`."""

    def __init__(
        self,
        model,
        tok,
        model_dir,
        name: str,
        limits: Limits | None = None,
        api_key: str | None = None,
        cache: StateCache | None = None,
    ):
        limits = limits or Limits()
        self.model, self.tok, self.name, self.limits, self.api_key = model, tok, name, limits, api_key
        self.metrics = Metrics()
        self.cache = cache or StateCache(256 << 20)
        self.cache.metrics = self.metrics
        self.fingerprint = model_fingerprint(model_dir)
        self.builder = PromptBuilder(model, tok, self.fingerprint)
        self.turn_end = frozenset(end_of_turn_ids(tok))
        self.eos = frozenset([tok.eos_token_id])
        self.created = int(time.time())
        self.loop: asyncio.AbstractEventLoop | None = None
        self.engine = Engine(model, limits.max_streams, limits.max_queue, self._notify, self._on_finished, self.metrics)
        for gauge, text, read in (
            ("ringan_active_streams", "rows in the decode batch", lambda: self.engine.active),
            (
                "ringan_queued_requests",
                "requests waiting for a row or reading their prompt",
                lambda: self.engine.waiting,
            ),
            ("ringan_state_cache_entries", "conversation states held in memory", lambda: self.cache.entries),
            ("ringan_state_cache_bytes", "bytes of the conversation states held in memory", lambda: self.cache.nbytes),
        ):
            self.metrics.gauge(gauge, text, read)

    # --- the decode thread's callbacks -------------------------------------------------------------------------

    def _notify(self, events: list) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._deliver, events)

    @staticmethod
    def _deliver(events: list) -> None:
        for job, kind, value in events:
            job.sink.put_nowait((kind, value))

    def _on_finished(self, job: Job, state: dict | None) -> None:
        """Save the conversation's state: after the reply when the reply's tokens are the ones the next request
        will hold for it (then the next turn reads only its new tokens), else right after the prompt."""
        prompt = job.prompt
        if not prompt.chat or job.prompt_state is None:
            return
        generated = [t for t in job.generated if t not in job.stop_ids]
        content = " ".join(self.tok.decode(generated, skip_special_tokens=True).split("\n")[0].split())
        canonical = job.finish_reason == "stop" and not job.stopped_by_text
        if state is not None and canonical and content and generated == self.builder.reply_piece(content):
            key, saved = prompt.reply_key(generated), SavedState(state, len(prompt.ids) + len(generated))
        else:
            key, saved = prompt.prompt_key, SavedState(job.prompt_state, len(prompt.ids))
        if int(saved.tensors["seen_tokens"][0]) != saved.length:  # never save a state under a count it did not read
            log.warning("a finished state read %d tokens, expected %d: not saved", int(saved.tensors["seen_tokens"][0]),
                        saved.length)  # fmt: skip
            return
        self.cache.put(key, saved)
        if job.conversation_key:
            named = SavedState(
                {**saved.tensors, "prefix_key": torch.tensor(list(bytes.fromhex(key)), dtype=torch.uint8)}, saved.length
            )
            self.cache.put(job.conversation_key, named)

    # --- requests ----------------------------------------------------------------------------------------------

    def conversation_key(self, conversation_id: str) -> str:
        return hashlib.sha256(f"{self.fingerprint}\0conversation\0{conversation_id}".encode()).hexdigest()

    def find_state(self, prompt, conversation_key: str | None) -> tuple[SavedState | None, int]:
        """The saved state this prompt continues, and how many of its tokens that state has read."""
        if conversation_key is not None:
            hit = self.cache.get([conversation_key])
            if hit is None:
                return None, 0
            state = hit[1]
            prefix = bytes(state.tensors["prefix_key"].tolist())
            lengths = {key: n for n, key in prompt.boundaries if 0 < n < len(prompt.ids)}
            n = lengths.get(prefix)
            return (state, n) if n is not None and state.length == n else (None, 0)
        candidates = prompt.lookup_keys()
        hit = self.cache.get([key for _, key in candidates])
        if hit is None:
            return None, 0
        n = dict((key, n) for n, key in candidates)[hit[0]]
        return (hit[1], n) if hit[1].length == n else (None, 0)  # a state that read another count: never used

    async def start(self, request: Request, parsed, prompt, conversation_key: str | None = None) -> Job:
        p = parsed.params
        if len(prompt.ids) > self.limits.max_prompt_tokens:
            param = "messages" if prompt.chat else "prompt"
            raise ApiError(413, f"the prompt has {len(prompt.ids)} tokens, at most {self.limits.max_prompt_tokens}",
                           param, "context_length_exceeded")  # fmt: skip
        if prompt.chat:
            if self.cache.second is not None:
                start, cached = await asyncio.to_thread(self.find_state, prompt, conversation_key)
            else:
                start, cached = self.find_state(prompt, conversation_key)
        else:
            start, cached = None, 0
        self.metrics.inc("ringan_state_cache_hits_total" if start is not None else "ringan_state_cache_misses_total")
        job = Job(prompt, p.max_tokens, p.temperature, p.top_p, p.seed, start, cached,
                  self.turn_end if prompt.chat else self.eos)  # fmt: skip
        job.sink = asyncio.Queue()
        job.conversation_key = conversation_key
        job.arrived = time.monotonic()
        try:
            self.engine.submit(job)
        except QueueFull:
            raise ApiError(429, "the server is at its limit of concurrent requests; retry shortly", None,
                           "rate_limit_exceeded", "rate_limit_error") from None  # fmt: skip
        return job

    def usage(self, job: Job) -> dict:
        return {
            "prompt_tokens": len(job.prompt.ids),
            "completion_tokens": len(job.generated),
            "total_tokens": len(job.prompt.ids) + len(job.generated),
            "prompt_tokens_details": {"cached_tokens": job.cached},
        }

    def headers(self, job: Job) -> dict:
        return {
            "x-ringan-cached-tokens": str(job.cached),
            "x-ringan-prefill-tokens": str(len(job.prompt.ids) - job.cached),
        }

    async def events(self, request: Request, job: Job, text: ReplyText):
        """`(delta, finish_reason)` pairs as tokens arrive; cancels the job when the client goes away (the
        caller's `finally`) or a stop sequence is found."""
        last, checked = None, time.monotonic()
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(job.sink.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    kind = None
                now = time.monotonic()
                if now - checked > 0.5:  # a client that left frees its row (a stream also learns it from Starlette)
                    checked = now
                    if await request.is_disconnected():
                        return
                if kind is None:
                    continue
                if kind == "error":
                    raise ApiError(500, value, None, "internal_error", "server_error")
                if kind == "token":
                    if last is None:
                        self.metrics.observe("ringan_time_to_first_token_seconds", now - job.arrived)
                    else:
                        self.metrics.observe("ringan_inter_token_seconds", now - last)
                    last = now
                    delta = text.add(value)
                    if text.stopped:
                        job.stopped_by_text = True
                        job.cancelled = True
                        self.engine._wake.set()
                        yield delta, "stop"
                        return
                    if delta:
                        yield delta, None
                    continue
                yield text.finish(), "length" if value == "length" else "stop"
                return
        finally:
            if job.finish_reason is None:
                job.cancelled = True  # the decode thread drops the row before its next step
                self.engine._wake.set()
            self._record(job)

    def _record(self, job: Job) -> None:
        self.metrics.observe("ringan_request_latency_seconds", time.monotonic() - job.arrived)
        self.metrics.inc("ringan_prompt_tokens_total", len(job.prompt.ids))
        self.metrics.inc("ringan_cached_tokens_total", job.cached)
        self.metrics.inc("ringan_prefill_tokens_total", len(job.prompt.ids) - job.cached)
        self.metrics.inc("ringan_completion_tokens_total", len(job.generated))
        log.info("request done: prompt=%d cached=%d completion=%d finish=%s %.3fs", len(job.prompt.ids), job.cached,
                 len(job.generated), job.finish_reason, time.monotonic() - job.arrived)  # fmt: skip
