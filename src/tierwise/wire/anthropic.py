"""Anthropic Messages wire format <-> canonical messages.

Pure functions over plain JSON dicts: no SDK, no I/O. The round trip wire -> canonical -> wire
is lossless for what the API and Claude Code send:

* A bare-string ``content`` (of a message) or ``system`` becomes one :class:`TextBlock`
  carrying the extra field ``string_content=True``; a list holding exactly one such block is
  written back as the bare string. The marker never reaches the wire.
* Fields tierwise does not name are kept as pydantic extras and written back verbatim: on
  blocks (``cache_control``, ``citations``, ``caller``), tools (server tools such as
  ``advisor_20260301``), messages, ``usage`` (``service_tier``, ``server_tool_use``) and the
  response (``container``, ``stop_details``). Unknown block types become ``OtherBlock``.
* Unknown request body fields go to ``Request.extra``; ``stream`` is dropped (the caller
  chooses streaming by calling ``complete`` or ``stream``).
* Cache writes are split by TTL from ``usage.cache_creation``; without that breakdown all of
  ``cache_creation_input_tokens`` counts as 5-minute. The breakdown is written back when it
  was read (or when any 1-hour writes exist).
* Fields written only when set: declared fields left at their default by code that built a
  block are omitted, except ``type`` and a tool call's ``input``, which the API requires.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from tierwise.errors import (
    ContextLengthError,
    InvalidRequestError,
    MalformedResponseError,
    ProviderError,
    status_error_class,
)
from tierwise.messages import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ContentBlock,
    JsonObject,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    Request,
    Response,
    ServerToolUseBlock,
    StreamEvent,
    TextBlock,
    TokenCounts,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
    UsageIteration,
)
from tierwise.wire.validate_anthropic import validate_anthropic

STRING_CONTENT = "string_content"
"""Extra field on a :class:`TextBlock` that stood for a bare-string ``content`` / ``system``."""

INTERNAL_RESPONSE_FIELDS = frozenset(
    {"upstream_model", "request_id", "openai", "recorded_correct", "recorded_cost_usd"}
)
"""Response extras that are tierwise's own and never written to the wire."""

_REQUEST_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "temperature",
        "top_p",
        "stop_sequences",
        "tools",
        "tool_choice",
        "thinking",
        "metadata",
        "stream",
    }
)
_RESPONSE_FIELDS = frozenset(
    {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
)
_USAGE_FIELDS = frozenset(
    {
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "cache_creation",
        "iterations",
        "output_tokens_details",
    }
)
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_STATUS_ERROR_TYPE = {status: kind for kind, status in _ERROR_STATUS.items()}
_CONTEXT_MARKER = "prompt is too long"
_PARSE_ERRORS = (KeyError, TypeError, AttributeError, ValidationError)

_BLOCK = TypeAdapter[ContentBlock](ContentBlock)
_BLOCKS = TypeAdapter[list[ContentBlock]](list[ContentBlock])


def _describe(exc: Exception) -> str:
    """A one-line account of a parse failure: the field path and what was wrong."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc)


# --- content blocks ------------------------------------------------------------------------


def block_to_anthropic(block: ContentBlock) -> JsonObject:
    """One block as wire JSON: the fields it was given, plus the ones the API requires."""
    data = block.model_dump(exclude_unset=True)
    data.pop(STRING_CONTENT, None)
    if isinstance(block, ToolUseBlock | ServerToolUseBlock):
        data["input"] = block.input
    elif isinstance(block, ToolResultBlock) and isinstance(block.content, list):
        data["content"] = [block_to_anthropic(part) for part in block.content]
    return {"type": block.type, **data}


def _content_from(content: str | list[Any]) -> list[ContentBlock]:
    if isinstance(content, str):
        return [TextBlock.model_validate({"type": "text", "text": content, STRING_CONTENT: True})]
    return _BLOCKS.validate_python(content)


def _is_string_content(block: TextBlock) -> bool:
    return bool((block.model_extra or {}).get(STRING_CONTENT))


def _content_to(blocks: Sequence[ContentBlock]) -> str | list[JsonObject]:
    if len(blocks) == 1 and isinstance(only := blocks[0], TextBlock) and _is_string_content(only):
        return only.text
    return [block_to_anthropic(block) for block in blocks]


# --- requests ------------------------------------------------------------------------------


def _message_from(raw: Mapping[str, Any]) -> Message:
    return Message.model_validate({**raw, "content": _content_from(raw["content"])})


def _message_to(message: Message) -> JsonObject:
    data = message.model_dump(exclude_unset=True, exclude={"content"})
    return {**data, "role": message.role, "content": _content_to(message.content)}


def request_from_anthropic(body: Mapping[str, Any], *, model: str | None = None) -> Request:
    """A canonical request from a ``POST /v1/messages`` body.

    ``model`` is the catalog id to record (the body's own ``model`` is the client's name for
    it and is the caller's to resolve). Raises :class:`InvalidRequestError` on a malformed body
    (checked by :func:`~tierwise.wire.validate_anthropic.validate_anthropic`, the error's
    ``param`` naming the field).
    """
    validate_anthropic(dict(body))
    try:
        return _request_from(body, model)
    except _PARSE_ERRORS as exc:
        raise InvalidRequestError(f"invalid Anthropic Messages request: {_describe(exc)}") from None


def _request_from(body: Mapping[str, Any], model: str | None) -> Request:
    system = body.get("system")
    return Request.model_validate(
        {
            "model": model,
            "messages": [_message_from(raw) for raw in body["messages"]],
            "system": _content_from(system) if system is not None else [],
            "max_tokens": body.get("max_tokens"),
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "stop": body.get("stop_sequences") or [],
            "tools": body.get("tools") or [],
            "tool_choice": body.get("tool_choice"),
            "thinking": body.get("thinking"),
            "metadata": body.get("metadata") or {},
            "extra": {k: v for k, v in body.items() if k not in _REQUEST_FIELDS},
            "origin": "anthropic",
        }
    )


def _dump_optional(model: BaseModel | None) -> JsonObject | None:
    return None if model is None else model.model_dump(exclude_unset=True)


ANTHROPIC_METADATA_FIELDS = frozenset({"user_id"})
"""The only ``metadata`` keys the Messages API accepts; others (routing hints such as
``files_affected``) stay in tierwise."""


def _upstream_metadata(metadata: JsonObject) -> JsonObject | None:
    kept = {k: v for k, v in metadata.items() if k in ANTHROPIC_METADATA_FIELDS}
    return kept or None


def request_to_anthropic(request: Request, model_name: str) -> JsonObject:
    """The ``POST /v1/messages`` body (without ``stream``) asking ``model_name``."""
    extra = request.extra if request.origin in (None, "anthropic") else {}
    body = {k: v for k, v in extra.items() if k != "stream"}
    body |= {"model": model_name, "messages": [_message_to(m) for m in request.messages]}
    optional = {
        "max_tokens": request.max_tokens,
        "system": _content_to(request.system) if request.system else None,
        "stop_sequences": request.stop or None,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "tools": [tool.model_dump(exclude_unset=True) for tool in request.tools] or None,
        "tool_choice": _dump_optional(request.tool_choice),
        "thinking": request.thinking,
        "metadata": _upstream_metadata(request.metadata),
    }
    return body | {k: v for k, v in optional.items() if v is not None}


# --- usage ---------------------------------------------------------------------------------


def _cache_writes_from(raw: Mapping[str, Any]) -> JsonObject:
    split = raw.get("cache_creation")
    if isinstance(split, Mapping):
        return {
            "cache_write_5m_tokens": split.get("ephemeral_5m_input_tokens") or 0,
            "cache_write_1h_tokens": split.get("ephemeral_1h_input_tokens") or 0,
        }
    total = raw.get("cache_creation_input_tokens")
    return {} if total is None else {"cache_write_5m_tokens": total}


def _token_counts_from(raw: Mapping[str, Any]) -> JsonObject:
    names = (
        ("input_tokens", "input_tokens"),
        ("output_tokens", "output_tokens"),
        ("cache_read_input_tokens", "cache_read_tokens"),
    )
    counts = {ours: raw[theirs] for theirs, ours in names if raw.get(theirs) is not None}
    return counts | _cache_writes_from(raw)


def _token_counts_to(counts: TokenCounts) -> JsonObject:
    data: JsonObject = {
        "input_tokens": counts.input_tokens,
        "cache_creation_input_tokens": counts.cache_write_tokens,
        "cache_read_input_tokens": counts.cache_read_tokens,
        "output_tokens": counts.output_tokens,
    }
    if counts.cache_write_1h_tokens or "cache_write_1h_tokens" in counts.model_fields_set:
        data["cache_creation"] = {
            "ephemeral_5m_input_tokens": counts.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": counts.cache_write_1h_tokens,
        }
    return data


def _iteration_from(raw: Mapping[str, Any]) -> UsageIteration:
    fields = {"kind": raw.get("type", "message"), "model": raw.get("model")}
    return UsageIteration.model_validate(fields | _token_counts_from(raw))


def _iteration_to(iteration: UsageIteration) -> JsonObject:
    model = {} if iteration.model is None else {"model": iteration.model}
    return {"type": iteration.kind, **model, **_token_counts_to(iteration)}


def usage_from_anthropic(usage: Mapping[str, Any]) -> Usage:
    """Canonical usage from an Anthropic ``usage`` object (message or ``message_delta``)."""
    fields = _token_counts_from(usage)
    if usage.get("iterations") is not None:
        fields["iterations"] = [_iteration_from(raw) for raw in usage["iterations"]]
    details = usage.get("output_tokens_details")
    if isinstance(details, Mapping) and details.get("thinking_tokens") is not None:
        fields["reasoning_tokens"] = details["thinking_tokens"]
    extras = {k: v for k, v in usage.items() if k not in _USAGE_FIELDS}
    return Usage.model_validate(extras | fields)


def usage_to_anthropic(usage: Usage) -> JsonObject:
    """An Anthropic ``usage`` object: the four token axes, TTL split, iterations, extras."""
    extras = {k: v for k, v in (usage.model_extra or {}).items() if k != "openai"}
    data = extras | _token_counts_to(usage)
    if usage.iterations or "iterations" in usage.model_fields_set:
        data["iterations"] = [_iteration_to(iteration) for iteration in usage.iterations]
    if usage.reasoning_tokens is not None:
        data["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return data


def merge_stream_usage(start: Mapping[str, Any], delta: Mapping[str, Any]) -> JsonObject:
    """A ``message_delta`` usage completed from ``message_start``'s: an absent field is unchanged.

    A TTL breakdown from the start is kept only while it still adds up to the delta's total.
    """
    merged = {**start, **delta}
    total = delta.get("cache_creation_input_tokens")
    if "cache_creation" not in delta and total is not None and _split_total(start) != total:
        merged.pop("cache_creation", None)
    return merged


def _split_total(usage: Mapping[str, Any]) -> int | None:
    split = usage.get("cache_creation")
    if not isinstance(split, Mapping):
        return None
    return sum(v for v in split.values() if isinstance(v, int))


# --- responses -----------------------------------------------------------------------------


def response_from_anthropic(
    body: Mapping[str, Any], model_id: str, *, provider: str = "anthropic"
) -> Response:
    """A canonical response from an Anthropic message; ``model_id`` is the catalog id that ran.

    The upstream's own model string is kept as the extra ``upstream_model``. Raises
    :class:`MalformedResponseError` when the body is not a message.
    """
    try:
        return _response_from(body, model_id)
    except _PARSE_ERRORS as exc:
        message = f"unreadable Anthropic message: {_describe(exc)}"
        raise MalformedResponseError(message, provider=provider, model=_name(model_id)) from None


def _response_from(body: Mapping[str, Any], model_id: str) -> Response:
    extras = {k: v for k, v in body.items() if k not in _RESPONSE_FIELDS}
    fields = {
        "id": body["id"],
        "model": model_id,
        "content": _BLOCKS.validate_python(body.get("content") or []),
        "stop_reason": body.get("stop_reason"),
        "stop_sequence": body.get("stop_sequence"),
        "usage": usage_from_anthropic(body.get("usage") or {}),
        "upstream_model": body.get("model"),
    }
    return Response.model_validate(extras | fields)


def response_to_anthropic(response: Response, model_name: str) -> JsonObject:
    """An Anthropic message for ``response``, naming the model ``model_name``."""
    extras = response.model_extra or {}
    return {
        "id": response.id,
        "type": "message",
        "role": "assistant",
        "model": model_name,
        "content": [block_to_anthropic(block) for block in response.content],
        "stop_reason": response.stop_reason,
        "stop_sequence": response.stop_sequence,
        "usage": usage_to_anthropic(response.usage),
        **{k: v for k, v in extras.items() if k not in INTERNAL_RESPONSE_FIELDS},
    }


# --- errors --------------------------------------------------------------------------------


def _name(model_id: str | None) -> str | None:
    """The upstream model name in a catalog id (``provider:name``), as errors report it."""
    return None if model_id is None else model_id.partition(":")[2] or model_id


def error_from_anthropic(
    body: Mapping[str, Any],
    *,
    provider: str,
    model: str | None = None,
    status: int | None = None,
    request_id: str | None = None,
) -> ProviderError:
    """The tierwise error for an Anthropic error envelope ``{"type": "error", "error": ...}``.

    Without an HTTP ``status`` (an ``error`` event mid-stream) the status is implied by the
    error type: ``overloaded_error`` is 529, ``rate_limit_error`` 429, and so on.
    """
    error = body.get("error")
    error = error if isinstance(error, Mapping) else {}
    kind = str(error.get("type") or "api_error")
    message = str(error.get("message") or kind)
    code = status or _ERROR_STATUS.get(kind, 500)
    cls = status_error_class(code)
    if code == 400 and _CONTEXT_MARKER in message.lower():
        cls = ContextLengthError
    rid = request_id or body.get("request_id")
    return cls(message, provider=provider, model=model, status=code, request_id=rid)


def error_to_anthropic(error: ProviderError) -> JsonObject:
    """The Anthropic error envelope for ``error`` (also the payload of an ``error`` event)."""
    status = error.status or 500
    kind = _STATUS_ERROR_TYPE.get(status, "invalid_request_error" if status < 500 else "api_error")
    body: JsonObject = {"type": "error", "error": {"type": kind, "message": error.message}}
    if error.request_id:
        body["request_id"] = error.request_id
    return body


# --- streaming -----------------------------------------------------------------------------

_EventParser = Callable[[Mapping[str, Any], str | None], StreamEvent]


def _message_start(event: Mapping[str, Any], model_id: str | None) -> StreamEvent:
    message = event["message"]
    return MessageStart(message=_response_from(message, model_id or message["model"]))


def _message_delta(event: Mapping[str, Any], _model_id: str | None) -> StreamEvent:
    delta = event.get("delta") or {}
    return MessageDelta(
        stop_reason=delta.get("stop_reason"),
        stop_sequence=delta.get("stop_sequence"),
        usage=usage_from_anthropic(event.get("usage") or {}),
    )


_EVENT_PARSERS: dict[str, _EventParser] = {
    "message_start": _message_start,
    "content_block_start": lambda e, _: BlockStart(
        index=e["index"], block=_BLOCK.validate_python(e["content_block"])
    ),
    "content_block_delta": lambda e, _: BlockDelta(index=e["index"], delta=dict(e["delta"])),
    "content_block_stop": lambda e, _: BlockStop(index=e["index"]),
    "message_delta": _message_delta,
    "message_stop": lambda e, _: MessageStop(),
}


def event_from_anthropic(
    event: Mapping[str, Any], *, model_id: str | None = None, provider: str = "anthropic"
) -> StreamEvent | None:
    """The canonical event for one Anthropic stream event; ``None`` for ``ping`` (and types
    this version does not know). An ``error`` event raises its :class:`ProviderError`.

    ``model_id`` is the catalog id put on ``message_start``'s response (default: the
    upstream's model string).
    """
    kind = str(event.get("type"))
    if kind == "error":
        raise error_from_anthropic(event, provider=provider, model=_name(model_id))
    parse = _EVENT_PARSERS.get(kind)
    if parse is None:
        return None
    try:
        return parse(event, model_id)
    except _PARSE_ERRORS as exc:
        message = f"unreadable Anthropic {kind} event: {_describe(exc)}"
        raise MalformedResponseError(message, provider=provider, model=_name(model_id)) from None


def event_to_anthropic(event: StreamEvent, model_name: str) -> JsonObject:
    """The Anthropic stream event (``data`` JSON) for a canonical event."""
    if isinstance(event, MessageStart):
        return {"type": event.type, "message": response_to_anthropic(event.message, model_name)}
    if isinstance(event, BlockStart):
        block = block_to_anthropic(event.block)
        return {"type": event.type, "index": event.index, "content_block": block}
    if isinstance(event, BlockDelta):
        return {"type": event.type, "index": event.index, "delta": event.delta}
    if isinstance(event, BlockStop):
        return {"type": event.type, "index": event.index}
    if isinstance(event, MessageDelta):
        delta = {"stop_reason": event.stop_reason, "stop_sequence": event.stop_sequence}
        return {"type": event.type, "delta": delta, "usage": usage_to_anthropic(event.usage)}
    return {"type": event.type}


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""Built once: ``json.dumps`` with options builds an encoder per call (every stream event)."""


def sse_encode(event: Mapping[str, Any]) -> bytes:
    """One server-sent event: ``event: <type>``, ``data: <json>``, blank line."""
    data = _JSON.encode(event)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()
