"""The two wire formats the gateway speaks, behind one interface.

A :class:`Dialect` turns a client's body into a canonical request, a canonical response or
event stream back into the client's format, and a :class:`~tierwise.gateway.failures.Failure`
into that API's own error envelope. The translation itself lives in :mod:`tierwise.wire`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from tierwise.gateway.failures import QUOTA_CODE, Failure
from tierwise.gateway.models import Api, ListedModel
from tierwise.messages import JsonObject, Request, Response, StreamEvent
from tierwise.wire import anthropic as anthropic_wire
from tierwise.wire import openai as openai_wire
from tierwise.wire import openai_stream

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "model_not_allowed"),
    404: ("invalid_request_error", "model_not_found"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


class StreamEncoder(Protocol):
    """Canonical events -> the bytes of one SSE stream in a client's format."""

    def encode(self, event: StreamEvent) -> bytes: ...

    def done(self) -> bytes: ...

    def error(self, failure: Failure) -> bytes: ...


class Dialect(Protocol):
    api: Api
    forwarded_headers: frozenset[str]
    """Client headers passed to the upstream (never credentials)."""

    def parse(self, body: JsonObject) -> Request: ...

    def render(self, response: Response, model_name: str) -> JsonObject: ...

    def stream_encoder(self, body: JsonObject, model_name: str) -> StreamEncoder: ...

    def error_status(self, failure: Failure) -> int: ...

    def error_body(self, failure: Failure) -> JsonObject: ...

    def models_body(self, models: Sequence[ListedModel]) -> JsonObject: ...


def forward_headers(dialect: Dialect, headers: Mapping[str, str]) -> dict[str, str]:
    """The client headers meant for the upstream: an allow-list, so no credential leaks."""
    return {k: v for k in dialect.forwarded_headers if (v := headers.get(k)) is not None}


# --- Anthropic Messages ------------------------------------------------------------------


class _AnthropicStream:
    def __init__(self, model_name: str, dialect: AnthropicDialect) -> None:
        self._model = model_name
        self._dialect = dialect

    def encode(self, event: StreamEvent) -> bytes:
        return anthropic_wire.sse_encode(anthropic_wire.event_to_anthropic(event, self._model))

    def done(self) -> bytes:
        return b""

    def error(self, failure: Failure) -> bytes:
        return anthropic_wire.sse_encode(self._dialect.error_body(failure))


class AnthropicDialect:
    """``POST /v1/messages``: Anthropic's Messages API, as the SDK and Claude Code send it."""

    api: Api = "anthropic"
    forwarded_headers = frozenset({"anthropic-beta"})

    def parse(self, body: JsonObject) -> Request:
        return anthropic_wire.request_from_anthropic(body)

    def render(self, response: Response, model_name: str) -> JsonObject:
        return anthropic_wire.response_to_anthropic(response, model_name)

    def stream_encoder(self, body: JsonObject, model_name: str) -> StreamEncoder:
        return _AnthropicStream(model_name, self)

    def error_status(self, failure: Failure) -> int:
        # Anthropic answers a reached spend limit with a 400 invalid_request_error
        return 400 if failure.code == QUOTA_CODE else failure.status

    def error_body(self, failure: Failure) -> JsonObject:
        kind = _ANTHROPIC_ERROR_TYPES.get(self.error_status(failure))
        kind = kind or ("invalid_request_error" if failure.status < 500 else "api_error")
        return {"type": "error", "error": {"type": kind, "message": failure.message}}

    def models_body(self, models: Sequence[ListedModel]) -> JsonObject:
        created = _EPOCH.isoformat().replace("+00:00", "Z")
        data = [
            {"type": "model", "id": m.id, "display_name": m.display_name, "created_at": created}
            for m in models
        ]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return {"data": data, "has_more": False, "first_id": first, "last_id": last}


# --- OpenAI Chat Completions -------------------------------------------------------------


class _OpenAIStream:
    def __init__(self, model_name: str, include_usage: bool, dialect: OpenAIDialect) -> None:
        self._encoder = openai_stream.OpenAIStreamEncoder(model_name, include_usage=include_usage)
        self._dialect = dialect

    def encode(self, event: StreamEvent) -> bytes:
        return b"".join(openai_stream.sse_encode(c) for c in self._encoder.encode(event))

    def done(self) -> bytes:
        return openai_stream.SSE_DONE

    def error(self, failure: Failure) -> bytes:
        return openai_stream.sse_encode(self._dialect.error_body(failure))


class OpenAIDialect:
    """``POST /v1/chat/completions``: OpenAI's Chat Completions API."""

    api: Api = "openai"
    forwarded_headers: frozenset[str] = frozenset()

    def parse(self, body: JsonObject) -> Request:
        return openai_wire.request_from_openai(body).model_copy(update={"model": None})

    def render(self, response: Response, model_name: str) -> JsonObject:
        return openai_wire.response_to_openai(response, model_name)

    def stream_encoder(self, body: JsonObject, model_name: str) -> StreamEncoder:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return _OpenAIStream(model_name, include_usage, self)

    def error_status(self, failure: Failure) -> int:
        return 503 if failure.status == 529 else failure.status

    def error_body(self, failure: Failure) -> JsonObject:
        kind, code = _OPENAI_ERRORS.get(failure.status, ("server_error", None))
        if failure.status < 500 and failure.status not in _OPENAI_ERRORS:
            kind = "invalid_request_error"
        code = failure.code or code  # a gateway refusal's own reason (e.g. task_not_found)
        if failure.code == QUOTA_CODE:
            kind = code = QUOTA_CODE
        error = {"message": failure.message, "type": kind, "param": failure.param, "code": code}
        return {"error": error}

    def models_body(self, models: Sequence[ListedModel]) -> JsonObject:
        created = int(_EPOCH.timestamp())
        data = [
            {"id": m.id, "object": "model", "created": created, "owned_by": m.owner} for m in models
        ]
        return {"object": "list", "data": data}


ANTHROPIC = AnthropicDialect()
OPENAI = OpenAIDialect()


def dialect_for_path(path: str, headers: Mapping[str, str]) -> Dialect:
    """The dialect to answer in when the route does not say (``/v1/models``, a 404)."""
    if path.startswith("/v1/messages") or "anthropic-version" in headers:
        return ANTHROPIC
    return OPENAI
