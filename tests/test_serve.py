"""`ringan serve` through the official `openai` client: both endpoints (streamed and not), limits and errors, the
conversation state cache, continuous batching, disconnects, a restart with `--state-dir`, and a bounded load."""

from __future__ import annotations

import concurrent.futures
import re
import subprocess
import sys
import time

import httpx
import pytest
import torch
from serve_helpers import FIRST, MODEL, TOPIC, chat, client, free_port, messages, openai, running

from ringan.base_model import base_model_path
from ringan.loading import load_model
from ringan.serving.state_cache import DiskStore

SECOND = ("user", "Budi", "Oke, terus kita menginap di mana?")


@pytest.fixture(scope="module")
def base():
    # one torch thread: on a shared 2-core machine a second one spin-waits for a busy core (40x slower prefill)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(base_model_path())
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def url(base):
    with running(*base) as (url, _):
        yield url


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_models_health_and_metrics_answer(url):
    c = client(url)
    assert [m.id for m in c.models.list().data] == [MODEL]
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    text = httpx.get(f"{url}/metrics").text
    for name in (
        "ringan_requests_total",
        "ringan_batch_size",
        "ringan_state_cache_hits_total",
        "ringan_state_cache_bytes",
    ):
        assert f"# TYPE {name} " in text


def test_chat_reply_ends_at_its_turn_with_usage_and_the_stream_gives_the_same_text(url):
    c = client(url)
    raw, reply = chat(c, messages(FIRST))
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert choice.message.content and "\n" not in choice.message.content
    assert choice.message.name == "Ringan"
    usage = reply.usage
    assert usage.completion_tokens >= 1 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    stream = c.chat.completions.create(model=MODEL, messages=messages(FIRST), temperature=0, max_tokens=40, stream=True,
                                       stream_options={"include_usage": True}, extra_body={"topic": TOPIC})  # fmt: skip
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == choice.message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.completion_tokens == usage.completion_tokens


def test_completions_stop_at_max_tokens_streamed_or_not(url):
    c = client(url)
    done = c.completions.create(model=MODEL, prompt="Budi: Halo, apa kabar?\n\nSari:", max_tokens=6, temperature=0)
    assert done.choices[0].finish_reason in ("length", "stop") and done.usage.completion_tokens <= 6
    pieces = list(c.completions.create(model=MODEL, prompt="Budi: Halo, apa kabar?\n\nSari:", max_tokens=6,
                                       temperature=0, stream=True))  # fmt: skip
    assert "".join(p.choices[0].text for p in pieces) == done.choices[0].text


def test_a_stop_sequence_cuts_the_reply_before_it(url):
    c = client(url)
    full = chat(c, messages(FIRST))[1].choices[0].message.content
    words = full.split()
    assert len(words) >= 2, full
    _, cut = chat(c, messages(FIRST), stop=[" " + words[1]])
    assert cut.choices[0].message.content == words[0] and cut.choices[0].finish_reason == "stop"


def test_a_seed_repeats_a_sampled_reply(url):
    c = client(url)
    replies = {chat(c, messages(FIRST), temperature=1.0, seed=7)[1].choices[0].message.content for _ in range(2)}
    assert len(replies) == 1


def test_bad_requests_are_openai_errors_naming_the_parameter(url):
    c = client(url)
    cases = [
        ({"temperature": "hot"}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 2}, "n"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"extra_body": {"topic": "a\nb"}}, "topic"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as err:
            chat(c, kwargs.pop("messages", messages(FIRST)), **kwargs)
        assert err.value.status_code == 400 and err.value.body["param"] == param, (param, err.value.body)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-4", messages=messages(FIRST))
    raw = httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert raw.status_code == 400 and set(raw.json()["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in raw.text


def test_limits_answer_401_413_and_429(base):
    with running(*base, api_key="sesame", max_body_bytes=2000, max_prompt_tokens=60, max_streams=1, max_queue=0) as (
        url,
        _,
    ):
        with pytest.raises(openai.AuthenticationError):
            chat(client(url, "wrong"), messages(FIRST))
        c = client(url, "sesame")
        with pytest.raises(openai.APIStatusError) as err:
            chat(c, messages(("user", "Budi", "kata " * 600)))
        assert err.value.status_code == 413
        with pytest.raises(openai.APIStatusError) as err:
            chat(c, messages(*[FIRST] * 8))
        assert err.value.status_code == 413 and err.value.body["code"] == "context_length_exceeded"
        stream = c.completions.create(model=MODEL, prompt="Halo", max_tokens=1000, stream=True)
        next(iter(stream))  # the only row is taken
        with pytest.raises(openai.RateLimitError):
            chat(c, messages(FIRST))
        stream.close()  # the client leaves: its row is freed at once
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and httpx.get(f"{url}/health").json()["active"]:
            time.sleep(0.02)
        assert chat(c, messages(FIRST))[1].choices[0].message.content


def test_the_next_turn_reads_only_its_new_tokens(url):
    c = client(url)
    raw1, first = chat(c, messages(FIRST))
    history = messages(FIRST, ("assistant", "Ringan", first.choices[0].message.content), SECOND)
    before = metric(url, "ringan_cached_tokens_total")
    raw2, second = chat(c, history)
    # the state after the first reply: its prompt and every reply token but the end of turn
    expected = first.usage.prompt_tokens + first.usage.completion_tokens - 1
    assert second.usage.prompt_tokens_details.cached_tokens == expected
    assert int(raw2.headers["x-ringan-prefill-tokens"]) == second.usage.prompt_tokens - expected
    assert metric(url, "ringan_cached_tokens_total") - before == expected


def test_a_history_that_does_not_match_starts_fresh_and_replies_as_a_fresh_server(base, url):
    c = client(url)
    first = chat(c, messages(FIRST))[1]
    changed = messages(FIRST, ("assistant", "Ringan", first.choices[0].message.content + " Hmm"), SECOND)
    _, reply = chat(c, changed)
    # at most the shared prefix (up to "Ringan:") is continued, never the state that read the other reply
    assert reply.usage.prompt_tokens_details.cached_tokens <= first.usage.prompt_tokens
    first = first.choices[0].message.content
    other_topic = chat(c, messages(FIRST, ("assistant", "Ringan", first), SECOND), extra_body={"topic": "Lain"})[1]
    assert other_topic.usage.prompt_tokens_details.cached_tokens == 0  # the Topik is part of the key
    with running(*base) as (fresh_url, _):
        _, fresh = chat(client(fresh_url), changed)
    assert fresh.choices[0].message.content == reply.choices[0].message.content


def test_a_conversation_id_continues_only_its_own_conversation(url):
    c = client(url)
    first = chat(c, messages(FIRST), extra_body={"conversation_id": "abc"})[1]
    history = messages(FIRST, ("assistant", "Ringan", first.choices[0].message.content), SECOND)
    again = chat(c, history, extra_body={"conversation_id": "abc"})[1]
    assert again.usage.prompt_tokens_details.cached_tokens > 0
    other = chat(c, history, extra_body={"conversation_id": "xyz"})[1]
    assert other.usage.prompt_tokens_details.cached_tokens == 0


def test_concurrent_streams_share_steps_and_give_the_sequential_text(url):
    c = client(url)
    prompts = ["Budi: Halo, apa kabar?\n\nSari:", "Sari: Kamu sudah makan?\n\nBudi: Belum, kamu?\n\nSari:"]

    def run(prompt: str) -> str:
        stream = c.completions.create(model=MODEL, prompt=prompt, max_tokens=30, temperature=0, stream=True)
        return "".join(p.choices[0].text for p in stream)

    alone = [run(p) for p in prompts]
    steps_before = metric(url, "ringan_batch_size_count")
    single_before = float(re.search(r'ringan_batch_size_bucket\{le="1"\} (\S+)', httpx.get(f"{url}/metrics").text)[1])
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        together = list(pool.map(run, prompts))
    assert together == alone
    steps = metric(url, "ringan_batch_size_count") - steps_before
    single = float(re.search(r'ringan_batch_size_bucket\{le="1"\} (\S+)', httpx.get(f"{url}/metrics").text)[1])
    assert single - single_before < steps  # some steps decoded both streams at once


def test_a_restart_with_a_state_dir_continues_the_conversation(base, tmp_path):
    with running(*base, second=DiskStore(tmp_path)) as (url, server):
        first = chat(client(url), messages(FIRST))[1]
        server.cache.flush()
    assert list(tmp_path.glob("*.safetensors"))
    history = messages(FIRST, ("assistant", "Ringan", first.choices[0].message.content), SECOND)
    with running(*base, second=DiskStore(tmp_path)) as (url, _):
        again = chat(client(url), history)[1]
    assert (
        again.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens + first.usage.completion_tokens - 1
    )


def test_fifty_concurrent_clients_get_replies_without_errors(url):
    c = client(url)

    def converse(i: int) -> int:
        history = messages(("user", "Budi", f"Hari ke-{i}: kita ke mana?"))
        reply = chat(c, history, max_tokens=12, temperature=0.8, seed=i)[1]
        history += [{"role": "assistant", "content": reply.choices[0].message.content or "..."}]
        history += [{"role": "user", "name": "Budi", "content": "Oke."}]
        return chat(c, history, max_tokens=12, seed=i)[1].usage.completion_tokens

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        counts = list(pool.map(converse, range(50)))
    assert len(counts) == 50 and all(n >= 1 for n in counts)
    assert metric(url, 'ringan_requests_total{endpoint="/v1/chat/completions",status="500"}') == 0


def test_the_command_serves_the_api_and_the_page():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "ringan", "serve", "--model", "base", "--port", str(port),
                                "--log-level", "warning", "--threads", "1"], stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        page = httpx.get(f"http://127.0.0.1:{port}/").text
        assert "Topik" in page and "Konteks" in page and "<script" in page and "http" not in page.split("<script")[1]
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_missing_extra_is_one_line_naming_it(capsys, monkeypatch):
    from ringan.cli import main

    monkeypatch.setitem(sys.modules, "starlette", None)  # as if `ringan[serve]` were not installed
    assert main(["serve", "--model", "base"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'ringan[serve]'" in err, err


def test_top_p_draws_stay_in_the_nucleus_and_follow_it():
    import random

    from ringan.serving.batcher import Job, draw
    from ringan.serving.conversation import Prompt

    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    jobs = [Job(Prompt([1], {}, True), 10, temperature=1.0, top_p=0.7)]
    jobs[0]._uniform = random.Random(0)
    counts = [0] * 4
    for _ in range(2000):
        counts[draw(probs.log(), jobs)[0]] += 1
    assert counts[2] == counts[3] == 0  # 0.5 + 0.3 reach 0.7: the rest is outside the nucleus
    assert 0.55 < counts[0] / 2000 < 0.7  # 0.5 / 0.8 = 0.625
    jobs[0].temperature = 0.0
    assert draw(probs.log(), jobs) == [0]


def test_streamed_text_holds_back_what_a_stop_sequence_may_still_take(base):
    from ringan.serving.replies import ReplyText

    _, tok = base
    ids = tok(" Halo apa kabar", add_special_tokens=False)["input_ids"]
    text = ReplyText(tok, chat=True, stop=["kabar"], skip_ids=())
    deltas = [text.add(t) for t in ids]
    assert text.stopped and "".join(deltas) == text.content == "Halo apa"


def test_logs_hold_no_message_contents(url, caplog):
    import logging

    secret = "Rahasia-ku-jangan-dicatat"
    with caplog.at_level(logging.DEBUG):
        chat(client(url), messages(("user", "Budi", secret)), max_tokens=4)
        with pytest.raises(openai.BadRequestError):
            chat(client(url), messages(("user", "Budi", secret)), temperature=secret)
    assert caplog.records and secret not in caplog.text


def test_the_state_cache_drops_the_least_recently_used_past_its_cap_and_survives_a_damaged_file(tmp_path):
    from ringan.serving.metrics import Metrics
    from ringan.serving.state_cache import SavedState, StateCache

    state = lambda n: SavedState({"seen_tokens": torch.tensor([n]), "x": torch.zeros(1000)}, n)  # noqa: E731
    metrics = Metrics()
    cache = StateCache(3 * state(1).nbytes, metrics=metrics)
    for key in "abc":
        cache.put(key, state(1))
    assert cache.get(["a"])[0] == "a"  # "a" is now the most recently used
    cache.put("d", state(1))
    assert cache.get(["b"]) is None and cache.get(["a"]) and cache.entries == 3
    assert metrics.value("ringan_state_cache_evictions_total") == 1
    (tmp_path / "bad.safetensors").write_bytes(b"not a state")
    disk = StateCache(1 << 20, DiskStore(tmp_path), metrics)
    assert disk.get(["bad"]) is None and metrics.value("ringan_state_store_errors_total") == 1
    disk._down_until = 0  # the store is tried again
    disk.put("good", state(7))
    disk.flush()
    assert StateCache(1 << 20, DiskStore(tmp_path)).get(["good"])[1].length == 7


def test_the_key_guards_the_api_and_metrics_not_the_page_or_health(base):
    with running(*base, api_key="sesame") as (url, _):
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/v1/models").json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/metrics", headers={"authorization": "Bearer sesame"}).status_code == 200
        assert httpx.get(f"{url}/").status_code == httpx.get(f"{url}/health").status_code == 200
