"""Servers for the serve tests: `ringan.serving` apps run by uvicorn on a free loopback port, in a thread of the
test process (the model is loaded once for every server of a test module)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

import uvicorn  # noqa: E402

from ringan.base_model import base_model_path  # noqa: E402
from ringan.serving.app import create_app  # noqa: E402
from ringan.serving.protocol import Limits  # noqa: E402
from ringan.serving.server import Server  # noqa: E402
from ringan.serving.state_cache import StateCache  # noqa: E402

MODEL = "ringan-base"
TOPIC = "Liburan ke Bali"
CONTEXT = "Dua teman merencanakan liburan murah ke Bali bulan depan."
FIRST = ("user", "Budi", "Kita naik apa ke Bali nanti?")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(model, tok, api_key: str | None = None, second=None, **limits):
    """`(base_url, server)` of a server on a free port, stopped at the end."""
    server = Server(model, tok, base_model_path(), MODEL, Limits(**limits), api_key, StateCache(64 << 20, second))
    config = uvicorn.Config(create_app(server), host="127.0.0.1", port=free_port(), log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}", server
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


def client(url: str, api_key: str = "none", **kwargs):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=60, **kwargs)


def messages(*turns: tuple[str, str, str]) -> list[dict]:
    """A chat's messages after the Konteks: `(role, name, text)` each."""
    return [{"role": "system", "content": CONTEXT}] + [
        {"role": role, "name": name, "content": text} for role, name, text in turns
    ]


def chat(c, msgs: list[dict], **kwargs):
    """A greedy reply (the raw response: headers and the parsed completion)."""
    kwargs = {"temperature": 0, "max_tokens": 40, **kwargs}
    extra = {"topic": TOPIC, **kwargs.pop("extra_body", {})}
    raw = c.chat.completions.with_raw_response.create(model=MODEL, messages=msgs, extra_body=extra, **kwargs)
    return raw, raw.parse()
