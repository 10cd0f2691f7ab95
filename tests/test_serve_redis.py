"""`ringan serve --redis-url`: conversation states in a real `redis-server` (started here on a free port; the
test is skipped when the binary is absent), shared by two servers, and a server that keeps serving when Redis
goes down."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import torch
from serve_helpers import FIRST, chat, client, free_port, messages, running

from ringan.base_model import base_model_path
from ringan.loading import load_model

redis = pytest.importorskip("redis")
SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(SERVER is None, reason="redis-server is not installed")

SECOND = ("user", "Budi", "Oke, terus kita menginap di mana?")


@pytest.fixture
def redis_url(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [
            SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield url, process
    process.terminate()
    process.wait(timeout=10)


def test_a_second_server_continues_from_redis_and_serves_on_when_redis_is_down(redis_url):
    from ringan.serving.state_cache import RedisStore

    url, process = redis_url
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = load_model(base_model_path())
        with running(*base, second=RedisStore(url)) as (api, server):
            first = chat(client(api), messages(FIRST))[1]
            server.cache.flush()
        assert redis.Redis.from_url(url).keys("ringan:state:*")
        history = messages(FIRST, ("assistant", "Ringan", first.choices[0].message.content), SECOND)
        with running(*base, second=RedisStore(url)) as (api, server):  # a new server: nothing in its memory
            again = chat(client(api), history)[1]
            assert again.usage.prompt_tokens_details.cached_tokens > 0
            process.terminate()
            process.wait(timeout=10)
            started = time.monotonic()
            down = chat(client(api), messages(("user", "Sari", "Halo, Redis sudah mati?")))[1]
            assert down.choices[0].finish_reason in ("stop", "length") and time.monotonic() - started < 10
            assert chat(client(api), messages(("user", "Sari", "Masih di sini?")))[1].choices[0].message is not None
            server.cache.flush()
            assert server.metrics.value("ringan_state_store_errors_total") >= 1
    finally:
        torch.set_num_threads(threads)
