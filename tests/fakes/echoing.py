"""A careless upstream: every answer is an error that echoes the credential it was sent.

:class:`EchoingUpstream` reads the key from ``authorization: Bearer`` or ``x-api-key`` and
puts it back in an error of the status and style it is set to (:data:`STYLES`): plain, inside
a JSON envelope, URL-encoded, JSON-escaped in a body that is not JSON, inside a JSON body
with no ``error.message`` (so the reader falls back to the whole body), as the request id
header of both APIs (``request-id``, ``x-request-id``), or in an in-band
error event of a 200 stream (Anthropic ``event: error``, OpenAI ``data: {"error": ...}``).
It serves both the Anthropic (``/v1/messages``) and the OpenAI (``/chat/completions``) paths,
in process or through ``tests.fakes.loopback.serve``. It does not import tierwise.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import quote

import httpx2

STYLES = (
    "envelope",
    "plain",
    "urlencoded",
    "escaped",
    "whole_body",
    "request_id",
    "stream_event",
)
"""How the key comes back; ``stream_event`` only answers a streamed request."""


def sent_key(request: httpx2.Request) -> str:
    """The credential the request carried (``""`` if none)."""
    bearer = request.headers.get("authorization", "")
    return bearer.removeprefix("Bearer ") or request.headers.get("x-api-key", "")


def _envelope(path: str, message: str) -> dict[str, object]:
    if path.endswith("/messages"):
        return {"type": "error", "error": {"type": "authentication_error", "message": message}}
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


class EchoingUpstream:
    """Answers every request with an error echoing its key; ``keys`` are the keys seen."""

    def __init__(self, status: int = 401, style: str = "envelope") -> None:
        self.status = status
        self.style = style
        self.keys: list[str] = []
        self._lock = threading.Lock()

    def set(self, status: int, style: str) -> EchoingUpstream:
        self.status, self.style = status, style
        return self

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        key = sent_key(request)
        with self._lock:
            self.keys.append(key)
        path = request.url.path
        if self.style == "stream_event":
            return self._stream_error(path, f"upstream rejected key {key}")
        if self.style == "plain":
            return self._text(f"{self.status} Unauthorized: the key {key} is not valid here")
        if self.style == "escaped":  # a JSON error cut short: not JSON, the key escaped in it
            escaped = json.dumps(key)[1:-1]
            return self._text('{"error": {"message": "invalid x-api-key \\"' + escaped + '\\"')
        if self.style == "whole_body":  # no error.message: the reader shows the whole body
            body = {"detail": "unauthorized", "request_headers": {"authorization": f"Bearer {key}"}}
            return httpx2.Response(self.status, json=body)
        if self.style == "request_id":
            body = _envelope(path, "unauthorized")
            ids = {"request-id": key, "x-request-id": key}
            return httpx2.Response(self.status, json=body, headers=ids)
        if self.style == "urlencoded":
            message = f"denied: GET /v1/check?api_key={quote(key, safe='')}&v=1"
            return httpx2.Response(self.status, json=_envelope(path, message))
        message = f"Incorrect API key provided: {key}. Check it and retry."
        return httpx2.Response(self.status, json=_envelope(path, message))

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self.handler)

    def _text(self, text: str) -> httpx2.Response:
        return httpx2.Response(self.status, text=text, headers={"content-type": "text/plain"})

    @staticmethod
    def _stream_error(path: str, message: str) -> httpx2.Response:
        if path.endswith("/messages"):
            error = {"type": "error", "error": {"type": "api_error", "message": message}}
            body = f"event: error\ndata: {json.dumps(error)}\n\n"
        else:
            body = f"data: {json.dumps({'error': {'message': message, 'code': 500}})}\n\n"
        return httpx2.Response(
            200, content=body.encode(), headers={"content-type": "text/event-stream"}
        )
