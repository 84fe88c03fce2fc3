"""A fake OpenAI Chat Completions API that speaks the real JSON and SSE wire format.

:class:`FakeOpenAI` holds a script of replies and records every request it receives. Its
:meth:`FakeOpenAI.handler` serves both ``httpx2.MockTransport`` (in process) and
``tests.fakes.loopback.serve`` (a real socket)::

    fake = FakeOpenAI().reply_completion(completion("Hi"))
    client = httpx2.AsyncClient(transport=fake.transport())

The builders below (:func:`completion`, :func:`tool_call`, :func:`usage`,
:func:`stream_chunks`, :func:`error_body`) make realistic wire JSON — cached prompt tokens,
reasoning tokens, parallel tool calls — for tests of the wire format, costs and the gateway.
This module deliberately does not import tierwise: the fake must not share code with what it
tests.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx2

JsonObject = dict[str, Any]

MODEL = "gpt-4o-mini-2024-07-18"
CREATED = 1_767_225_600
FINGERPRINT = "fp_5d58a6052a"
COMPLETIONS_SUFFIX = "/chat/completions"

# --- wire builders ---------------------------------------------------------------------------


def usage(
    prompt_tokens: int = 19,
    completion_tokens: int = 10,
    *,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> JsonObject:
    """A usage object as OpenAI sends it; ``prompt_tokens`` already includes the cached ones."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def tool_call(name: str, arguments: JsonObject | str, *, call_id: str | None = None) -> JsonObject:
    """A function tool call; ``arguments`` is sent as the compact JSON string models emit."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments, separators=(",", ":"))
    return {
        "id": call_id or "call_" + hashlib.sha1(f"{name}{raw}".encode()).hexdigest()[:24],
        "type": "function",
        "function": {"name": name, "arguments": raw},
    }


def completion(
    text: str | None = "Hello! How can I help you today?",
    *,
    tool_calls: Sequence[JsonObject] = (),
    refusal: str | None = None,
    finish_reason: str | None = None,
    model: str = MODEL,
    completion_id: str = "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    token_usage: JsonObject | None = None,
) -> JsonObject:
    """A ``chat.completion`` object shaped like OpenAI's (``refusal`` and ``annotations`` too)."""
    message: JsonObject = {"role": "assistant", "content": text, "refusal": refusal}
    message["annotations"] = []
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
    finish = finish_reason or ("tool_calls" if tool_calls else "stop")
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage() if token_usage is None else token_usage,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _chunk(body: JsonObject, delta: JsonObject, finish: str | None = None) -> JsonObject:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    head = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"]}
    return {**head, "model": body["model"], "system_fingerprint": FINGERPRINT, "choices": [choice]}


def _tool_call_chunks(
    body: JsonObject, index: int, call: JsonObject, size: int
) -> list[JsonObject]:
    head = {"index": index, "id": call["id"], "type": "function"}
    first = {**head, "function": {"name": call["function"]["name"], "arguments": ""}}
    chunks = [_chunk(body, {"tool_calls": [first]})]
    for piece in _pieces(call["function"]["arguments"], size):
        fragment = {"index": index, "function": {"arguments": piece}}
        chunks.append(_chunk(body, {"tool_calls": [fragment]}))
    return chunks


def stream_chunks(
    body: JsonObject, *, chunk_size: int = 7, include_usage: bool = True
) -> list[JsonObject]:
    """The ``chat.completion.chunk`` objects OpenAI streams for the completion ``body``.

    A role chunk, the text (or refusal) in pieces, each tool call as a head fragment and
    argument fragments, a finish chunk, and with ``include_usage`` a last chunk with empty
    ``choices`` and the usage.
    """
    message = body["choices"][0]["message"]
    chunks = [_chunk(body, {"role": "assistant", "content": "", "refusal": None})]
    for key in ("content", "refusal"):
        if message.get(key):
            chunks += [_chunk(body, {key: p}) for p in _pieces(message[key], chunk_size)]
    for index, call in enumerate(message.get("tool_calls") or []):
        chunks += _tool_call_chunks(body, index, call, chunk_size)
    chunks.append(_chunk(body, {}, body["choices"][0]["finish_reason"]))
    if include_usage:
        chunks = [{**c, "usage": None} for c in chunks]
        chunks.append({**_chunk(body, {}), "choices": [], "usage": body["usage"]})
    return chunks


def sse_body(chunks: Iterable[Mapping[str, Any]], *, done: bool = True) -> bytes:
    """Server-sent events as OpenAI writes them: ``data: <json>`` lines, then ``[DONE]``."""
    events = [f"data: {json.dumps(c, separators=(',', ':'))}\n\n" for c in chunks]
    return ("".join(events) + ("data: [DONE]\n\n" if done else "")).encode()


def error_body(
    message: str,
    error_type: str = "invalid_request_error",
    *,
    code: str | None = None,
    param: str | None = None,
) -> JsonObject:
    """OpenAI's error envelope: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


# --- recorded requests and scripted replies --------------------------------------------------


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the fake saw it."""

    method: str
    url: str
    path: str
    headers: httpx2.Headers
    body: bytes

    def json(self) -> JsonObject:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data

    @property
    def wants_stream(self) -> bool:
        return bool(self.body) and self.json().get("stream") is True

    @property
    def wants_usage(self) -> bool:
        return bool((self.json().get("stream_options") or {}).get("include_usage"))


Reply = Callable[[ReceivedRequest, str], httpx2.Response]
"""Builds the response to a request, given the ``x-request-id`` to stamp on it."""


def _response(
    status: int,
    content: bytes | AsyncIterator[bytes],
    content_type: str,
    request_id: str,
    headers: Mapping[str, str],
) -> httpx2.Response:
    merged = {"content-type": content_type, "x-request-id": request_id, **headers}
    return httpx2.Response(status, content=content, headers=merged)


def _json_reply(status: int, body: JsonObject, headers: Mapping[str, str]) -> Reply:
    content = json.dumps(body).encode()
    return lambda _, rid: _response(status, content, "application/json", rid, headers)


def _sse_response(content: bytes | AsyncIterator[bytes], request_id: str) -> httpx2.Response:
    return _response(200, content, "text/event-stream; charset=utf-8", request_id, {})


async def _then_drop(content: bytes) -> AsyncIterator[bytes]:
    yield content
    raise httpx2.ReadError("peer closed connection without sending complete message body")


class FakeOpenAI:
    """A scripted Chat Completions endpoint; replies are served first in, first out.

    Any path ending in ``/chat/completions`` is the endpoint (hosts mount it under different
    prefixes). With nothing scripted it answers 418 with an error envelope saying so.
    """

    def __init__(self) -> None:
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.requests: list[ReceivedRequest] = []

    # scripting -----------------------------------------------------------------------------

    def reply(self, reply: Reply) -> FakeOpenAI:
        with self._lock:
            self._replies.append(reply)
        return self

    def reply_completion(self, body: JsonObject, *, chunk_size: int = 7) -> FakeOpenAI:
        """Answer with ``body``: as JSON, or as its chunk stream when the request streams."""

        def build(request: ReceivedRequest, request_id: str) -> httpx2.Response:
            if request.wants_stream:
                chunks = stream_chunks(
                    body, chunk_size=chunk_size, include_usage=request.wants_usage
                )
                return _sse_response(sse_body(chunks), request_id)
            return _response(200, json.dumps(body).encode(), "application/json", request_id, {})

        return self.reply(build)

    def reply_chunks(
        self, chunks: Iterable[Mapping[str, Any]], *, done: bool = True, drop: bool = False
    ) -> FakeOpenAI:
        """Answer with exactly these chunks; ``done=False`` leaves out ``[DONE]``.

        ``drop=True`` makes the connection fail after the chunks (``httpx2.MockTransport``
        only: the loopback server sends whole bodies).
        """
        content = sse_body(chunks, done=done)
        return self.reply(
            lambda _, rid: _sse_response(_then_drop(content) if drop else content, rid)
        )

    def reply_error(
        self,
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> FakeOpenAI:
        """Answer with an HTTP error and OpenAI's error envelope."""
        body = error_body(message, error_type, code=code, param=param)
        return self.reply(_json_reply(status, body, headers or {}))

    def reply_raw(
        self, status: int, content: bytes, *, content_type: str = "application/json"
    ) -> FakeOpenAI:
        """Answer with arbitrary bytes (e.g. a malformed body)."""
        return self.reply(lambda _, rid: _response(status, content, content_type, rid, {}))

    # serving -------------------------------------------------------------------------------

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        """Record ``request`` and answer it with the next scripted reply."""
        received = ReceivedRequest(
            request.method,
            str(request.url),
            request.url.path,
            httpx2.Headers(request.headers),
            request.read(),
        )
        with self._lock:
            self.requests.append(received)
            request_id = f"req_{next(self._ids):032x}"
            reply = self._next_reply(received)
        return reply(received, request_id)

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self.handler)

    def client(self) -> httpx2.AsyncClient:
        """An HTTP client whose every request is answered by this fake, in process."""
        return httpx2.AsyncClient(transport=self.transport())

    def _next_reply(self, request: ReceivedRequest) -> Reply:
        if request.method != "POST" or not request.path.endswith(COMPLETIONS_SUFFIX):
            body = error_body(f"Invalid URL ({request.method} {request.path})", code=None)
            return _json_reply(404, body, {})
        if not self._replies:
            return _json_reply(418, error_body("fake upstream: no reply scripted"), {})
        return self._replies.popleft()

    @property
    def last_request(self) -> ReceivedRequest:
        return self.requests[-1]
