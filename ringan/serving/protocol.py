"""OpenAI request bodies checked into typed requests; every problem is an `ApiError` naming the parameter.

The chat messages map onto the dialogue format: `system` (or `developer`) messages are the Konteks, each
message's `name` is its speaker (`Kamu` for a user, `Ringan` for the assistant when none is given), and the extra
body field `topic` is the Topik. `speaker` (extra) names who replies: by default the last assistant message's
name, else `Ringan`. `conversation_id` (extra) keys the conversation's saved state by name as well as by its
tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..data import MAX_CONTEXT, MAX_TOPIC, Turn, check_label
from ..defaults import DEFAULT_CONTEXT, DEFAULT_TOPIC

USER_NAME, BOT_NAME = "Kamu", "Ringan"
MAX_STOP = 4  # OpenAI's limit on stop sequences
MAX_STOP_CHARS = 100


class ApiError(Exception):
    """An error answered as `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how many the server takes at once."""

    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int = 16384
    max_tokens: int = 1024  # the most a request may ask for
    default_max_tokens: int = 120  # a chat reply is one line: it stops at its end of turn long before this
    max_streams: int = 128  # rows decoded together
    max_queue: int = 256  # requests waiting for a row


@dataclass
class Params:
    """Decoding parameters shared by both endpoints."""

    model: str
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]
    stream: bool
    include_usage: bool


@dataclass
class ChatRequest:
    params: Params
    topic: str
    context: str
    turns: list[Turn]
    speaker: str
    conversation_id: str | None = None


@dataclass
class CompletionRequest:
    params: Params
    prompt: str
    topic: str | None = None
    context: str | None = None
    echo: bool = False


def _number(body: dict, name: str, default, low: float, high: float, integer: bool = False):
    value = body.get(name)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
        raise ApiError(400, f"'{name}' must be {kind}, got {type(value).__name__}", name, "invalid_type")
    if not low <= value <= high:
        raise ApiError(400, f"'{name}' must be between {low:g} and {high:g}, got {value!r}", name, "invalid_value")
    return value


def _string(body: dict, name: str, default: str | None = None) -> str | None:
    value = body.get(name, default)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string, got {type(value).__name__}", name, "invalid_type")
    return value


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be true or false, got {type(value).__name__}", name, "invalid_type")
    return value


def _label(value: str, what: str, param: str) -> str:
    try:
        return check_label(value, what)
    except ValueError as err:
        limit = MAX_TOPIC if what == "topic" else MAX_CONTEXT
        raise ApiError(400, f"'{param}': one line of at most {limit} characters ({err})", param) from None


def params(body: dict, limits: Limits, served_model: str, default_max_tokens: int) -> Params:
    """The decoding parameters of a chat or completion body."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", None, "invalid_json")
    model = _string(body, "model")
    if model is None:
        raise ApiError(400, "'model' is required", "model", "missing_required_parameter")
    if model != served_model:
        raise ApiError(404, f"the model '{model[:100]}' does not exist; this server has '{served_model}'", "model",
                       "model_not_found")  # fmt: skip
    if _number(body, "n", 1, 1, 1, integer=True) != 1:
        raise ApiError(400, "'n' must be 1", "n")
    if _flag(body, "logprobs") or body.get("tools"):
        name = "logprobs" if body.get("logprobs") else "tools"
        raise ApiError(400, f"'{name}' is not supported by this server", name, "unsupported_parameter")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = _number({name: max_tokens}, name, default_max_tokens, 1, limits.max_tokens, integer=True)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is None:
        stop = []
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, f"'stop' must be a string or a list of at most {MAX_STOP} non-empty strings", "stop")
    if any(len(s) > MAX_STOP_CHARS for s in stop):
        raise ApiError(400, f"'stop' sequences may have at most {MAX_STOP_CHARS} characters each", "stop")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", "stream_options", "invalid_type")
    return Params(
        model=model,
        max_tokens=max_tokens,
        temperature=float(_number(body, "temperature", 1.0, 0.0, 2.0)),
        top_p=float(_number(body, "top_p", 1.0, 0.0, 1.0)),
        seed=_number(body, "seed", None, -(2**63), 2**63 - 1, integer=True),
        stop=stop,
        stream=_flag(body, "stream"),
        include_usage=_flag(options or {}, "include_usage"),
    )


def _content(message: dict, i: int) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts: only text ones
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            raise ApiError(400, f"'messages[{i}].content': only text parts are supported", f"messages[{i}].content")
        content = " ".join(p["text"] for p in content)
    if content is None and message.get("role") == "assistant":
        content = ""
    if not isinstance(content, str):
        raise ApiError(400, f"'messages[{i}].content' must be a string", f"messages[{i}].content", "invalid_type")
    return " ".join(content.split())  # a turn is one line (as `ringan chat` folds a message)


def _speaker(name, default: str, param: str) -> str:
    if name is None:
        return default
    if not isinstance(name, str):
        raise ApiError(400, f"'{param}' must be a string", param, "invalid_type")
    try:
        return Turn(" ".join(name.split()), "x").speaker
    except ValueError as err:
        raise ApiError(400, f"'{param}': {err}", param) from None


def chat_request(body: dict, limits: Limits, served_model: str) -> ChatRequest:
    """A `/v1/chat/completions` body as a dialogue: Topik, Konteks, turns and who replies."""
    p = params(body, limits, served_model, limits.default_max_tokens)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of messages", "messages")
    contexts, turns, last_bot = [], [], None
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ApiError(400, f"'messages[{i}]' must be an object", f"messages[{i}]", "invalid_type")
        role = message.get("role")
        text = _content(message, i)
        if role in ("system", "developer"):
            if text:
                contexts.append(text)
            continue
        if role not in ("user", "assistant"):
            raise ApiError(400, f"'messages[{i}].role' must be system, user or assistant", f"messages[{i}].role")
        default = USER_NAME if role == "user" else BOT_NAME
        name = _speaker(message.get("name"), default, f"messages[{i}].name")
        if role == "assistant":
            last_bot = name
            text = text or "..."  # an empty reply is kept as `ringan chat` keeps it
        elif not text:
            raise ApiError(400, f"'messages[{i}].content' must not be empty", f"messages[{i}].content")
        try:
            turns.append(Turn(name, text))
        except ValueError as err:
            raise ApiError(400, f"'messages[{i}].content': {err}", f"messages[{i}].content") from None
    topic = _label(_string(body, "topic", DEFAULT_TOPIC), "topic", "topic")
    context = _label(" ".join(contexts), "context", "messages") if contexts else DEFAULT_CONTEXT
    speaker = _speaker(_string(body, "speaker"), last_bot or BOT_NAME, "speaker")
    conversation_id = _string(body, "conversation_id")
    if conversation_id is not None and not 0 < len(conversation_id) <= 200:
        raise ApiError(400, "'conversation_id' must have 1 to 200 characters", "conversation_id")
    return ChatRequest(p, topic, context, turns, speaker, conversation_id)


def completion_request(body: dict, limits: Limits, served_model: str) -> CompletionRequest:
    """A `/v1/completions` body: a plain text prompt, continued until `</s>`, a stop sequence or `max_tokens`."""
    p = params(body, limits, served_model, 16)  # OpenAI's default for completions
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise ApiError(400, "'prompt' must be a non-empty string (one prompt per request)", "prompt")
    topic, context = _string(body, "topic"), _string(body, "context")
    topic = _label(topic, "topic", "topic") if topic is not None else None
    context = _label(context, "context", "context") if context is not None else None
    return CompletionRequest(p, prompt, topic, context, echo=_flag(body, "echo"))
