"""Reading a request body: bounded while it arrives, parsed once, nested only so deep.

:func:`read_body` is the one place a body is read. A declared ``Content-Length`` over the
limit is a 413 before a byte is read; a chunked body is counted as it arrives and cut at
the limit. :func:`parse_json` refuses JSON nested deeper than ``[gateway] max_json_depth``
(400), which also keeps every later walk of the body (canonical form, validation, the
wire translation) far from Python's recursion limit, and a body of more than
:data:`MAX_JSON_VALUES` values (413), which bounds the memory its parse takes.
:func:`request_json` does both once per request and keeps the result in the scope
(``tierwise.body``) for the layers after it.
"""

from __future__ import annotations

import json
from typing import Any, cast

from starlette.types import Receive, Scope

from tierwise.errors import ClientDisconnectedError, InvalidRequestError, RequestTooLargeError
from tierwise.messages import JsonObject

MAX_JSON_VALUES = 1_000_000
"""Most values (counted as commas and opening brackets, an upper bound) a body may hold: a
32 MB body of ``[]`` or ``1.5,`` parses to ~20x its size in Python objects, so the body limit
alone does not bound memory. A million is several times any model's context window."""

BODY = "tierwise.body"
"""The scope key of the parsed body (a layer that read it hands it on this way)."""


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``, when it sent a well-formed one."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


def check_declared(scope: Scope, limit: int) -> None:
    """RequestTooLargeError when the declared ``Content-Length`` is over ``limit``."""
    declared = declared_length(scope)
    if declared is not None and declared > limit:
        raise RequestTooLargeError(
            f"request body of {declared} bytes is over the limit of {limit} bytes"
        )


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytearray:
    """The whole body, at most ``limit`` bytes (413 past it, before buffering more)."""
    check_declared(scope, limit)
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnectedError("the client disconnected while sending its request")
        body += message.get("body", b"")
        if len(body) > limit:
            raise RequestTooLargeError(f"request body is over the limit of {limit} bytes")
        if not message.get("more_body", False):
            return body


def _too_deep(max_depth: int) -> InvalidRequestError:
    return InvalidRequestError(f"request body is nested deeper than {max_depth} levels")


def check_depth(value: object, max_depth: int) -> None:
    """InvalidRequestError when ``value`` nests objects and arrays deeper than ``max_depth``
    (the body itself is level 1): one pass over the containers, a level at a time (JSON
    gives exact ``dict`` and ``list`` types; scalars and strings cost a type check each)."""
    level: list[Any] = [value] if type(value) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise _too_deep(max_depth)
        inner: list[Any] = []
        keep = inner.append
        for container in level:
            for item in container.values() if type(container) is dict else container:
                kind = type(item)
                if kind is dict or kind is list:
                    keep(item)
        level = inner


def check_values(raw: bytes | bytearray) -> None:
    """RequestTooLargeError (413) when ``raw`` may hold more than :data:`MAX_JSON_VALUES`
    values; a body shorter than that cannot, and is not scanned."""
    if len(raw) <= MAX_JSON_VALUES:
        return
    values = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
    if values > MAX_JSON_VALUES:
        raise RequestTooLargeError(
            f"request body holds more than {MAX_JSON_VALUES} JSON values ({values})"
        )


def parse_json(raw: bytes | bytearray, max_depth: int) -> JsonObject:
    """``raw`` as a JSON object nested at most ``max_depth`` deep and holding at most
    :data:`MAX_JSON_VALUES` values; 400 (413 for too many values) otherwise."""
    check_values(raw)
    try:
        body = json.loads(raw)
    except RecursionError:  # far deeper than any limit: the parser gave up
        raise _too_deep(max_depth) from None
    except ValueError as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    check_depth(body, max_depth)
    return body


async def request_json(scope: Scope, receive: Receive, limit: int, max_depth: int) -> JsonObject:
    """The request's body as a JSON object, read and parsed once (then kept in the scope)."""
    kept = scope.get(BODY)
    if kept is not None:
        return cast(JsonObject, kept)
    body = parse_json(await read_body(scope, receive, limit), max_depth)
    scope[BODY] = body
    return body
