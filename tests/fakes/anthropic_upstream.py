"""A fake Anthropic Messages API that speaks the real JSON and SSE wire format.

:class:`FakeAnthropic` holds a script of replies and records every request it receives. Its
:meth:`FakeAnthropic.handler` serves both ``httpx2.MockTransport`` (in process) and
``tests.fakes.loopback.serve`` (a real socket)::

    fake = FakeAnthropic().reply_message(text_message("Hi"))
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(fake.handler))

The builders below (:func:`text_message`, :func:`tool_use_message`, :func:`thinking_message`,
:func:`advisor_message`, :func:`claude_code_request`) make realistic wire JSON for tests of
the wire format, costs and the gateway. This module deliberately does not import tierwise:
the fake must not share code with what it tests.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2

JsonObject = dict[str, Any]

EXECUTOR_MODEL = "claude-sonnet-4-6"
ADVISOR_MODEL = "claude-opus-4-7"
MESSAGES_PATH = "/v1/messages"
ADVISOR_BETA = "advisor-tool-2026-03-01"


# --- recorded requests and scripted replies --------------------------------------------------


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the fake saw it."""

    method: str
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


Reply = Callable[[ReceivedRequest, str], httpx2.Response]
"""Builds the response to a request, given the ``request-id`` to stamp on it."""


def _response(
    status: int, content: bytes, content_type: str, request_id: str, headers: Mapping[str, str]
) -> httpx2.Response:
    merged = {"content-type": content_type, "request-id": request_id, **headers}
    return httpx2.Response(status, content=content, headers=merged)


def error_body(error_type: str, message: str, request_id: str | None = None) -> JsonObject:
    """The real error envelope: ``{"type": "error", "error": {...}, "request_id": ...}``."""
    body: JsonObject = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def sse_body(events: Iterable[Mapping[str, Any]]) -> bytes:
    """Server-sent events as Anthropic writes them (compact JSON, ``event:`` line first)."""
    lines = (
        f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"
        for event in events
    )
    return "".join(lines).encode()


class FakeAnthropic:
    """A scripted Anthropic Messages endpoint; replies are served first in, first out.

    With nothing scripted it answers 418 with an error envelope saying so, which surfaces in
    a test as a clear upstream error rather than a hang.
    """

    def __init__(self) -> None:
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.requests: list[ReceivedRequest] = []

    # scripting -----------------------------------------------------------------------------

    def reply(self, reply: Reply) -> FakeAnthropic:
        with self._lock:
            self._replies.append(reply)
        return self

    def reply_message(
        self, message: JsonObject, *, headers: Mapping[str, str] | None = None
    ) -> FakeAnthropic:
        """Answer with ``message``: as JSON, or as its SSE stream when the request streams."""

        def build(request: ReceivedRequest, request_id: str) -> httpx2.Response:
            if request.wants_stream:
                return _sse_response(stream_events(message), request_id, headers or {})
            content = json.dumps(message).encode()
            return _response(200, content, "application/json", request_id, headers or {})

        return self.reply(build)

    def reply_stream(
        self, events: Iterable[Mapping[str, Any]], *, headers: Mapping[str, str] | None = None
    ) -> FakeAnthropic:
        """Answer with exactly these stream events (e.g. one ending in an ``error`` event)."""
        frozen = list(events)
        return self.reply(lambda _, rid: _sse_response(frozen, rid, headers or {}))

    def reply_error(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> FakeAnthropic:
        """Answer with an HTTP error and the real error envelope."""

        def build(_: ReceivedRequest, request_id: str) -> httpx2.Response:
            content = json.dumps(error_body(error_type, message, request_id)).encode()
            return _response(status, content, "application/json", request_id, headers or {})

        return self.reply(build)

    def reply_raw(
        self,
        status: int,
        content: bytes,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> FakeAnthropic:
        """Answer with arbitrary bytes (e.g. a malformed body)."""
        return self.reply(
            lambda _, rid: _response(status, content, content_type, rid, headers or {})
        )

    # serving -------------------------------------------------------------------------------

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        """Record ``request`` and answer it with the next scripted reply."""
        received = ReceivedRequest(
            request.method, request.url.path, httpx2.Headers(request.headers), request.read()
        )
        with self._lock:
            self.requests.append(received)
            request_id = f"req_fake{next(self._ids):06d}"
            reply = self._next_reply(received)
        return reply(received, request_id)

    def _next_reply(self, request: ReceivedRequest) -> Reply:
        if request.method != "POST" or request.path != MESSAGES_PATH:
            return _error_reply(
                404, "not_found_error", f"{request.method} {request.path} not found"
            )
        if not self._replies:
            return _error_reply(418, "invalid_request_error", "fake upstream: no reply scripted")
        return self._replies.popleft()

    @property
    def last_request(self) -> ReceivedRequest:
        return self.requests[-1]


def _error_reply(status: int, error_type: str, message: str) -> Reply:
    def build(_: ReceivedRequest, request_id: str) -> httpx2.Response:
        content = json.dumps(error_body(error_type, message, request_id)).encode()
        return _response(status, content, "application/json", request_id, {})

    return build


def _sse_response(
    events: Iterable[Mapping[str, Any]], request_id: str, headers: Mapping[str, str]
) -> httpx2.Response:
    content_type = "text/event-stream; charset=utf-8"
    extra = {"cache-control": "no-cache", **headers}
    return _response(200, sse_body(events), content_type, request_id, extra)


# --- message builders ------------------------------------------------------------------------


def usage(
    input_tokens: int,
    output_tokens: int,
    *,
    cache_read: int = 0,
    cache_write_5m: int = 0,
    cache_write_1h: int = 0,
    iterations: list[JsonObject] | None = None,
) -> JsonObject:
    """A usage object shaped like the API's: four axes, TTL breakdown, service tier."""
    data: JsonObject = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write_5m + cache_write_1h,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache_write_5m,
            "ephemeral_1h_input_tokens": cache_write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    if iterations is not None:
        data["iterations"] = iterations
    return data


def iteration(
    kind: str,
    input_tokens: int,
    output_tokens: int,
    *,
    model: str | None = None,
    cache_read: int = 0,
    cache_write_5m: int = 0,
    cache_write_1h: int = 0,
) -> JsonObject:
    """One ``usage.iterations[]`` entry (``message``, ``advisor_message``, ...)."""
    entry: JsonObject = {"type": kind}
    if model is not None:
        entry["model"] = model
    return entry | {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write_5m + cache_write_1h,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache_write_5m,
            "ephemeral_1h_input_tokens": cache_write_1h,
        },
    }


def message(
    content: list[JsonObject],
    *,
    stop_reason: str = "end_turn",
    usage_: JsonObject | None = None,
    model: str = EXECUTOR_MODEL,
    id: str = "msg_01XFDUDYJgAACzvnptvVoYEL",
) -> JsonObject:
    """A complete Messages API response."""
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage_ if usage_ is not None else usage(25, 12),
    }


def text_message(text: str = "Hello! How can I help you today?", **fields: Any) -> JsonObject:
    return message([{"type": "text", "text": text}], **fields)


def tool_use_message(
    name: str = "get_weather",
    input: JsonObject | None = None,
    *,
    text: str = "I'll check the weather for you.",
    tool_use_id: str = "toolu_01A09q90qw90lq917835lq9",
) -> JsonObject:
    """A response calling a client tool (``stop_reason="tool_use"``)."""
    call = {
        "type": "tool_use",
        "id": tool_use_id,
        "name": name,
        "input": input if input is not None else {"location": "Paris, FR", "unit": None},
    }
    content = [{"type": "text", "text": text}, call]
    return message(content, stop_reason="tool_use", usage_=usage(412, 68))


def thinking_message(
    thinking: str = "The user wants 17 * 23. 17 * 20 = 340, 17 * 3 = 51, so 391.",
    text: str = "17 \u00d7 23 = 391.",
    *,
    signature: str = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds",
) -> JsonObject:
    """A response with an extended-thinking block before its answer."""
    content = [
        {"type": "thinking", "thinking": thinking, "signature": signature},
        {"type": "text", "text": text},
    ]
    return message(content, usage_=usage(48, 160))


ADVISOR_TOOL_USE_ID = "srvtoolu_01Xk3v9Qp2Lm7Rt8Yw4Zn6Bc"


def advisor_result(text: str = "Check the off-by-one in the loop bound first.") -> JsonObject:
    return {"type": "advisor_result", "text": text, "stop_reason": "end_turn"}


def advisor_redacted_result(encrypted: str = "EnycBCkIYARIMq7dPq1AzT0d==") -> JsonObject:
    return {"type": "advisor_redacted_result", "encrypted_content": encrypted, "stop_reason": None}


def advisor_error(code: str = "overloaded") -> JsonObject:
    return {"type": "advisor_tool_result_error", "error_code": code}


ADVISOR_ITERATIONS = (
    iteration("message", 1200, 85, cache_read=8000, cache_write_5m=600),
    iteration("advisor_message", 9400, 620, model=ADVISOR_MODEL, cache_write_1h=2800),
    iteration("message", 1905, 240, cache_read=8600),
)
"""Executor turn, the advisor's sub-inference (opus, cache written at 1h TTL), executor turn.

Billing truth is these three entries. The top-level usage of :func:`advisor_message` repeats
the first executor iteration's input, cache read and cache write, and sums the executor's
output (85 + 240), as the API reports it.
"""


def advisor_message(result: JsonObject | None = None) -> JsonObject:
    """An executor turn that consulted the advisor: server_tool_use, its result, then text."""
    content = [
        {"type": "text", "text": "Let me get a second opinion before editing."},
        {"type": "server_tool_use", "id": ADVISOR_TOOL_USE_ID, "name": "advisor", "input": {}},
        {
            "type": "advisor_tool_result",
            "tool_use_id": ADVISOR_TOOL_USE_ID,
            "content": result if result is not None else advisor_result(),
        },
        {"type": "text", "text": "The loop should stop at len(items) - 1; fixing that."},
    ]
    iterations = [dict(entry) for entry in ADVISOR_ITERATIONS]
    top = usage(1200, 325, cache_read=8000, cache_write_5m=600, iterations=iterations)
    return message(content, usage_=top, id="msg_01AdvisorExchange7Rq2")


# --- streaming -------------------------------------------------------------------------------


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _block_events(index: int, block: JsonObject, size: int) -> list[JsonObject]:
    """content_block_start (the block opened empty), its deltas, content_block_stop."""
    kind = block["type"]
    deltas: list[JsonObject] = []
    opening = dict(block)
    if kind == "text":
        opening["text"] = ""
        deltas = [{"type": "text_delta", "text": c} for c in _chunks(block["text"], size)]
    elif kind == "thinking":
        opening |= {"thinking": "", "signature": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": c} for c in _chunks(block["thinking"], size)
        ]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind in ("tool_use", "server_tool_use"):
        opening["input"] = {}
        raw = json.dumps(block["input"]) if block["input"] else ""
        deltas = [{"type": "input_json_delta", "partial_json": c} for c in _chunks(raw, size)]
    start = {"type": "content_block_start", "index": index, "content_block": opening}
    middle = [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
    return [start, *middle, {"type": "content_block_stop", "index": index}]


def stream_events(message: JsonObject, *, chunk_size: int = 16) -> list[JsonObject]:
    """The event sequence the API streams for ``message``.

    ``message_start`` carries the input-side usage (with its TTL breakdown) and one output
    token; a ``ping`` follows; the final ``message_delta`` carries cumulative usage without
    the breakdown (as the API sends it), plus ``iterations`` and ``server_tool_use``.
    """
    final = message["usage"]
    start_usage = {k: v for k, v in final.items() if k not in ("iterations", "server_tool_use")}
    start = dict(message, content=[], stop_reason=None, usage=start_usage | {"output_tokens": 1})
    events: list[JsonObject] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for index, block in enumerate(message["content"]):
        events += _block_events(index, block, chunk_size)
    delta_usage = {k: v for k, v in final.items() if k not in ("cache_creation", "service_tier")}
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append({"type": "message_delta", "delta": stop, "usage": delta_usage})
    events.append({"type": "message_stop"})
    return events


# --- a Claude Code request -------------------------------------------------------------------

CLAUDE_CODE_HEADERS = {
    "anthropic-beta": f"claude-code-20250219,interleaved-thinking-2025-05-14,{ADVISOR_BETA}",
    "x-app": "cli",
}


def _tool(name: str, description: str, properties: JsonObject, required: list[str]) -> JsonObject:
    return {
        "name": name,
        "description": description,
        "input_schema": {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
            "$schema": "http://json-schema.org/draft-07/schema#",
        },
    }


def _claude_code_tools() -> list[JsonObject]:
    string = {"type": "string"}
    tools = [
        _tool(
            "Bash",
            "Executes a bash command.",
            {"command": string, "timeout": {"type": "number"}},
            ["command"],
        ),
        _tool(
            "Read",
            "Reads a file.",
            {"file_path": string, "offset": {"type": "number"}},
            ["file_path"],
        ),
        _tool(
            "Edit",
            "Replaces text in a file.",
            {"file_path": string, "old_string": string, "new_string": string},
            ["file_path", "old_string", "new_string"],
        ),
        _tool("Glob", "Finds files by pattern.", {"pattern": string, "path": string}, ["pattern"]),
        _tool(
            "Grep",
            "Searches file contents.",
            {
                "pattern": string,
                "path": string,
                "output_mode": {
                    "type": "string",
                    "enum": ["content", "files_with_matches", "count"],
                },
            },
            ["pattern"],
        ),
        _tool(
            "TodoWrite",
            "Updates the todo list.",
            {"todos": {"type": "array", "items": {"type": "object"}}},
            ["todos"],
        ),
    ]
    tools[-1]["cache_control"] = {"type": "ephemeral"}
    advisor = {
        "type": "advisor_20260301",
        "name": "advisor",
        "model": ADVISOR_MODEL,
        "max_uses": 3,
        "max_tokens": 2048,
        "caching": {"type": "ephemeral", "ttl": "1h"},
    }
    return [*tools, advisor]


def _claude_code_history() -> list[JsonObject]:
    png = {
        "type": "base64",
        "media_type": "image/png",
        "data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kg"
        "AAAABJRU5ErkJggg==",
    }
    pdf = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQKJcfsj6IK"}
    return [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "<system-reminder>\nAs you answer, use the TodoWrite tool.\n"
                    "</system-reminder>",
                },
                {"type": "text", "text": "The parser test fails; the spec is attached. Fix it."},
                {"type": "document", "source": pdf, "title": "parser-spec.pdf"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {
                    "type": "thinking",
                    "thinking": "I should read the failing test first.",
                    "signature": "EqMBCkgIBxABGAIiQL7p",
                },
                {
                    "type": "redacted_thinking",
                    "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP",
                },
                {
                    "type": "tool_use",
                    "id": "toolu_01ReadParser",
                    "name": "Read",
                    "input": {"file_path": "/repo/tests/test_parser.py"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01ReadParser",
                    "content": "     1\timport pytest\n     2\tfrom repo.parser import parse\n",
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {
                    "type": "server_tool_use",
                    "id": ADVISOR_TOOL_USE_ID,
                    "name": "advisor",
                    "input": {},
                },
                {
                    "type": "advisor_tool_result",
                    "tool_use_id": ADVISOR_TOOL_USE_ID,
                    "content": advisor_redacted_result(),
                },
                {
                    "type": "server_tool_use",
                    "id": "srvtoolu_01Second",
                    "name": "advisor",
                    "input": {},
                },
                {
                    "type": "advisor_tool_result",
                    "tool_use_id": "srvtoolu_01Second",
                    "content": advisor_error("max_uses_exceeded"),
                },
                {"type": "text", "text": "Running the test to see the failure."},
                {
                    "type": "tool_use",
                    "id": "toolu_01RunTests",
                    "name": "Bash",
                    "input": {"command": "pytest -q tests/test_parser.py", "timeout": None},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01RunTests",
                    "is_error": True,
                    "content": [
                        {
                            "type": "text",
                            "text": "FAILED tests/test_parser.py::test_empty - IndexError",
                        },
                        {"type": "image", "source": png},
                    ],
                },
                {
                    "type": "text",
                    "text": "Here is the screenshot of the CI run.",
                    "cache_control": {"type": "ephemeral"},
                },
            ],
        },
    ]


def claude_code_request() -> JsonObject:
    """A ``POST /v1/messages`` body as Claude Code sends it (trimmed, but every feature)."""
    return {
        "model": EXECUTOR_MODEL,
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {
                "type": "text",
                "text": "x-anthropic-billing-header: cc_version=2.1.3; cc_entrypoint=cli",
            },
            {
                "type": "text",
                "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                "cache_control": {"type": "ephemeral"},
            },
            {
                "type": "text",
                "text": "You are an interactive CLI tool that helps with software engineering.",
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            },
        ],
        "messages": _claude_code_history(),
        "tools": _claude_code_tools(),
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "temperature": 1,
        "metadata": {"user_id": "user_4f1c_account_9a2e_session_77d0"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    }
