"""`ringan serve`: serve a model to OpenAI clients and to a browser (the server itself is `ringan.serving`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import OptionError
from ..files import readable_folder
from ..loading import load_model
from ..options import Options, option
from .common import model_folder, model_option, require_extra, set_threads, threads_option


@dataclass(frozen=True, kw_only=True)
class ServeOptions(Options):
    """Serve a model over HTTP: the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models), a web chat
    page at /, /health and /metrics. Concurrent requests share decode steps; each conversation's state is kept,
    so its next turn reads only its new tokens. Needs pip install 'ringan[serve]'. See docs/serving.md."""

    model: str | None = model_option()
    host: str = option("127.0.0.1", "address to listen on (0.0.0.0 opens the server to the network: set --api-key)")
    port: int = option(8000, "port to listen on", minimum=1, maximum=65535)
    api_key: str | None = option(None, "require 'Authorization: Bearer KEY' on /v1/* and /metrics",
                                 default_text="$RINGAN_API_KEY, else none")  # fmt: skip
    name: str | None = option(None, "the model id clients pass as 'model'", default_text="the model folder's name")
    state_dir: str | None = option(None, "also keep conversation states in this folder (a restart continues them)")
    redis_url: str | None = option(None, "also keep conversation states in Redis (redis://host:port/db)")
    cache_mb: int = option(256, "memory for conversation states, in MB (least recently used dropped first; 0: off)",
                           minimum=0, maximum=1 << 20)  # fmt: skip
    max_streams: int = option(128, "requests decoded together (rows of the batch)", minimum=1, maximum=4096)
    max_queue: int = option(256, "requests waiting for a row; beyond it: 429", minimum=0, maximum=1 << 20)
    max_tokens: int = option(1024, "the most a request's max_tokens may ask for", minimum=1, maximum=131072)
    max_prompt_tokens: int = option(16384, "the longest prompt, in tokens; beyond it: 413", minimum=1, maximum=1 << 24)
    max_body_kb: int = option(1024, "the largest request body, in KB; beyond it: 413", minimum=1, maximum=1 << 20)
    threads: int = threads_option()
    log_level: str = option("info", "server log level (logs never hold message contents)",
                            choices=("debug", "info", "warning", "error"))  # fmt: skip


def served_name(model: str | None, folder: Path) -> str:
    """`ringan-base` for the shipped base, else the folder's name (its parent's for a `runs/NAME/model`)."""
    if model == "base":
        return "ringan-base"
    folder = folder.resolve()
    return folder.parent.name if folder.name == "model" and folder.parent.name else folder.name


def serve(options: ServeOptions | None = None, /, **overrides) -> None:
    """Run the server until interrupted."""
    import os

    o = ServeOptions.build(options, overrides)
    require_extra("serve", ("starlette", "uvicorn"))
    if o.state_dir and o.redis_url:
        raise OptionError("--redis-url", "either --state-dir or --redis-url, not both", repr(o.redis_url))
    if o.redis_url:
        require_extra("serve", ("redis",))
        if not o.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise OptionError("--redis-url", "a redis://, rediss:// or unix:// URL", repr(o.redis_url))
    import uvicorn

    from ..serving.app import create_app
    from ..serving.protocol import Limits
    from ..serving.server import Server
    from ..serving.state_cache import DiskStore, RedisStore, StateCache

    set_threads(o.threads)
    folder = readable_folder(model_folder(o.model))
    model, tok = load_model(folder)
    model.eval()
    second = DiskStore(o.state_dir) if o.state_dir else RedisStore(o.redis_url) if o.redis_url else None
    limits = Limits(
        max_body_bytes=o.max_body_kb * 1024,
        max_prompt_tokens=o.max_prompt_tokens,
        max_tokens=o.max_tokens,
        default_max_tokens=min(120, o.max_tokens),
        max_streams=o.max_streams,
        max_queue=o.max_queue,
    )
    api_key = o.api_key or os.environ.get("RINGAN_API_KEY") or None
    server = Server(model, tok, folder, o.name or served_name(o.model, folder), limits, api_key,
                    StateCache(o.cache_mb << 20, second))  # fmt: skip
    where = f"http://{o.host}:{o.port}"
    print(f"(serving {server.name} on {where}: the chat page at /, the OpenAI API at /v1)", file=sys.stderr)
    uvicorn.run(create_app(server), host=o.host, port=o.port, log_level=o.log_level, timeout_graceful_shutdown=3)
