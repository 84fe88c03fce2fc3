"""OpenAI Chat Completions wire JSON <-> canonical messages.

Pure functions over plain dicts (the JSON bodies): requests, responses and usage. The
stateful stream decoder and encoder, and the SSE framing, are in
:mod:`tierwise.wire.openai_stream`. The same functions serve both edges: a provider calling
an OpenAI-compatible host, and the gateway serving OpenAI clients.

What the Chat Completions format cannot express is handled on purpose:

* ``thinking`` / ``redacted_thinking`` blocks and ``Request.thinking`` are dropped: another
  vendor's reasoning cannot be replayed.
* ``server_tool_use`` blocks and server tools (a ``Tool.type`` other than ``None``,
  ``"custom"`` or ``"function"``, e.g. ``advisor_20260301``) are dropped; so is
  ``tool_choice`` when no tool is left to choose.
* ``advisor_tool_result``: in a request, an ``advisor_result`` becomes assistant text
  (``"Advisor's advice:\\n…"``) so the executor keeps the advice; redacted and error results
  are dropped. In a response rendered for an OpenAI client, advisor blocks are dropped.
* ``tool_result.is_error`` is dropped; images inside a tool result (tool messages carry text
  only) are sent in a user message right after the tool messages.
* Anthropic-only fields are dropped, since OpenAI rejects unknown ones: on blocks
  (``cache_control``, ``citations``, ``caller``) and in ``Request.extra``
  (``context_management``, ``container``, ``mcp_servers``). ``Request.metadata`` (Anthropic's
  ``{"user_id"}``) is not sent; OpenAI's own ``metadata`` travels in ``Request.extra``.
* An Anthropic ``document`` with a base64 source becomes a ``file`` part, one with a text
  source a text part. Other unmodelled user blocks are sent verbatim (OpenAI's own
  ``input_audio`` and ``file`` parts round-trip this way; a foreign one is left for the host
  to reject, rather than silently dropping what the user sent). Unmodelled blocks in
  assistant messages (server-side tool results) are dropped.

Spelling that changes but meaning that does not: ``stop`` is always sent as a list; content
that is one plain text block is sent as a string; tool arguments are re-serialised as
compact JSON (arguments that are not a JSON object are kept verbatim in the block's
``raw_arguments`` field); system messages anywhere in the conversation are hoisted into
``Request.system`` (the role of the first one is kept in ``Request.system_role``); only
choice 0 of a response is read. The token limit is sent back under the name it came in:
when a client used ``max_completion_tokens``, that key stays in ``Request.extra`` as the
marker, and ``Request.max_tokens`` holds the value that is sent. An OpenAI reasoning model
(``openai_reasoning`` in the catalog) always gets ``max_completion_tokens``, and no
``temperature``, ``top_p`` or ``stop``, which it refuses.

Responses keep the upstream's own model name as the extra field ``upstream_model``, and the
fields tierwise does not model under the extra field ``openai`` — on the response
(``created``, ``system_fingerprint``, ``logprobs``, ``annotations`` …) and on its usage
(``audio_tokens``, a host's ``cost`` …) — so that
``response_to_openai(response_from_openai(body, …), body["model"]) == body``. A refusal
reads as text with stop reason ``refusal``; streamed back to a client it is sent as content
with finish reason ``content_filter``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from tierwise.errors import InvalidRequestError
from tierwise.messages import (
    AdvisorToolResultBlock,
    ContentBlock,
    ImageBlock,
    JsonObject,
    Message,
    OtherBlock,
    Request,
    Response,
    TextBlock,
    TokenCounts,
    Tool,
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
)
from tierwise.wire.validate_openai import validate_openai

FINISH_TO_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
STOP_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_FOREIGN_BLOCK_FIELDS = frozenset({"cache_control", "citations", "caller", "string_content"})
"""Block fields of Anthropic's (``string_content`` is :mod:`tierwise.wire.anthropic`'s
marker for bare-string content); OpenAI rejects unknown fields, so they are not sent."""
_FOREIGN_BODY_FIELDS = frozenset({"context_management", "container", "mcp_servers"})
"""Anthropic-only request fields that may sit in ``Request.extra``; they are not sent."""
_REQUEST_FIELDS = frozenset(
    {"model", "messages", "max_tokens", "temperature", "top_p", "stop", "tools", "tool_choice"}
)
_IMAGE_URL_OPTIONS = frozenset({"detail"})
_CHOICE_FROM_OPENAI: dict[str, Literal["auto", "none", "any"]] = {
    "auto": "auto",
    "none": "none",
    "required": "any",
}
_CHOICE_TO_OPENAI = {"auto": "auto", "none": "none", "any": "required"}
_USAGE_DETAIL_FIELDS = {
    "prompt_tokens_details": frozenset({"cached_tokens"}),
    "completion_tokens_details": frozenset({"reasoning_tokens"}),
}
_USAGE_FIELDS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"}).union(
    _USAGE_DETAIL_FIELDS
)


class WireFormatError(ValueError):
    """A body, chunk or stream that is not valid Chat Completions JSON."""


# --- small helpers ---------------------------------------------------------------------------


def _fields_except(obj: JsonObject, *names: str) -> JsonObject:
    return {k: v for k, v in obj.items() if k not in names}


def _wire_extras(model: BaseModel) -> JsonObject:
    """A canonical object's extra fields, minus those only Anthropic understands."""
    extras: JsonObject = model.model_extra or {}
    return {k: v for k, v in extras.items() if k not in _FOREIGN_BLOCK_FIELDS}


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""Built once: ``json.dumps`` with options builds an encoder per call (every stream chunk)."""


def _dump_json(value: Any) -> str:
    return _JSON.encode(value)


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _describe(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(exc) or type(exc).__name__


def _stop_reason(finish_reason: str | None) -> str | None:
    """Canonical stop reason; finish reasons with no canonical twin are kept as they are."""
    return None if finish_reason is None else FINISH_TO_STOP.get(finish_reason, finish_reason)


def _finish_reason(stop_reason: str | None, raw: str | None = None) -> str:
    """OpenAI finish reason; ``raw`` (the upstream's own) wins when it says the same thing."""
    if raw is not None and (
        _stop_reason(raw) == stop_reason or (raw == "stop" and stop_reason == "refusal")
    ):
        return raw
    return STOP_TO_FINISH.get(stop_reason or "end_turn", "stop")


# --- content parts ---------------------------------------------------------------------------


def _text_from_part(part: JsonObject) -> TextBlock:
    if part.get("type") != "text":
        raise WireFormatError(f"content part type {part.get('type')!r} is not allowed here")
    return TextBlock(text=part["text"], **_fields_except(part, "type", "text"))


def _text_part(block: TextBlock) -> JsonObject:
    return {"type": "text", "text": block.text, **_wire_extras(block)}


def _plain_text(blocks: Sequence[ContentBlock]) -> str | None:
    """The text of a lone text block without extra fields (sent as a plain string)."""
    if len(blocks) == 1 and isinstance(blocks[0], TextBlock) and not _wire_extras(blocks[0]):
        return blocks[0].text
    return None


def _image_source(url: str) -> JsonObject:
    header, sep, data = url.partition(",")
    if url.startswith("data:") and sep and header.endswith(";base64"):
        return {"type": "base64", "media_type": header[5:].split(";")[0], "data": data}
    return {"type": "url", "url": url}


def _image_from_part(part: JsonObject) -> ImageBlock:
    image_url = part["image_url"]
    options = _fields_except(image_url, "url")
    rest = _fields_except(part, "type", "image_url")
    return ImageBlock(source=_image_source(image_url["url"]), **options, **rest)


def _image_url(source: JsonObject) -> str:
    if source.get("type") == "base64":
        return f"data:{source['media_type']};base64,{source['data']}"
    if source.get("type") == "url":
        return str(source["url"])
    raise InvalidRequestError(
        f"image source {source.get('type')!r} cannot be sent to an OpenAI-compatible host"
    )


def _image_part(block: ImageBlock) -> JsonObject:
    extras = _wire_extras(block)
    options = {k: v for k, v in extras.items() if k in _IMAGE_URL_OPTIONS}
    rest = {k: v for k, v in extras.items() if k not in _IMAGE_URL_OPTIONS}
    return {"type": "image_url", "image_url": {"url": _image_url(block.source), **options}, **rest}


def _user_part(part: JsonObject) -> ContentBlock:
    """A user content part; parts tierwise does not model (audio, file) are kept verbatim."""
    if part.get("type") == "image_url":
        return _image_from_part(part)
    if part.get("type") == "text":
        return _text_from_part(part)
    return OtherBlock.model_validate(part)


def _document_part(block: OtherBlock) -> JsonObject:
    """An Anthropic ``document`` as a ``file`` part (base64) or text; else kept verbatim."""
    source = (block.model_extra or {}).get("source") or {}
    if source.get("type") == "base64":
        data = f"data:{source.get('media_type')};base64,{source.get('data')}"
        name = (block.model_extra or {}).get("title") or "document.pdf"
        return {"type": "file", "file": {"filename": name, "file_data": data}}
    if source.get("type") == "text":
        return {"type": "text", "text": str(source.get("data", ""))}
    return block.model_dump()


def _user_part_to_openai(block: TextBlock | ImageBlock | OtherBlock) -> JsonObject:
    if isinstance(block, TextBlock):
        return _text_part(block)
    if isinstance(block, ImageBlock):
        return _image_part(block)
    return _document_part(block) if block.type == "document" else block.model_dump()


def _text_blocks(content: str | list[JsonObject] | None) -> list[TextBlock]:
    """Text blocks of system, tool or assistant content (refusal parts read as text)."""
    if not content:
        return []
    if isinstance(content, str):
        return [TextBlock(text=content)]
    return [
        TextBlock(text=p["refusal"]) if p.get("type") == "refusal" else _text_from_part(p)
        for p in content
    ]


def _text_content(blocks: Sequence[TextBlock]) -> str | list[JsonObject]:
    plain = _plain_text(blocks)
    return [_text_part(b) for b in blocks] if plain is None else plain


# --- tools -----------------------------------------------------------------------------------


def _parse_arguments(raw: str) -> JsonObject | None:
    """Tool arguments as an object, or ``None`` when they are not a JSON object."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _tool_use_from_openai(call: JsonObject) -> ToolUseBlock:
    if call.get("type", "function") != "function":
        raise WireFormatError(f"tool call type {call.get('type')!r} is not supported")
    function = call["function"]
    raw = function.get("arguments") or ""
    fields = _fields_except(call, "id", "type", "function", "index")
    parsed = _parse_arguments(raw)
    if parsed is None:
        fields["raw_arguments"] = raw
    block_id = call.get("id") or _new_call_id()
    return ToolUseBlock(id=block_id, name=function["name"], input=parsed or {}, **fields)


def _tool_call_to_openai(block: ToolUseBlock) -> JsonObject:
    fields = _wire_extras(block)
    raw = fields.pop("raw_arguments", None)
    arguments = raw if isinstance(raw, str) else _dump_json(block.input)
    function = {"name": block.name, "arguments": arguments}
    return {"id": block.id, "type": "function", "function": function, **fields}


def _tool_from_openai(tool: JsonObject) -> Tool:
    if tool.get("type") != "function":
        raise WireFormatError(f"tool type {tool.get('type')!r} is not supported")
    fn = tool["function"]
    extras = _fields_except(fn, "name", "description", "parameters")
    given = {k: fn[k] for k in ("description",) if fn.get(k) is not None}  # never send null
    return Tool(name=fn["name"], input_schema=fn.get("parameters"), **given, **extras)


def _tool_to_openai(tool: Tool) -> JsonObject | None:
    """A function tool, or ``None`` for a server tool OpenAI cannot run."""
    if tool.type not in (None, "custom", "function"):
        return None
    function: JsonObject = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.input_schema is not None:
        function["parameters"] = tool.input_schema
    if (strict := (tool.model_extra or {}).get("strict")) is not None:
        function["strict"] = strict
    return {"type": "function", "function": function}


def _tool_choice_from_openai(raw: Any) -> tuple[ToolChoice | None, Any]:
    """The canonical choice, and the raw value when it has no canonical twin."""
    if raw is None:
        return None, None
    if isinstance(raw, str) and raw in _CHOICE_FROM_OPENAI:
        return ToolChoice(type=_CHOICE_FROM_OPENAI[raw]), None
    if isinstance(raw, dict) and raw.get("type") == "function":
        return ToolChoice(type="tool", name=raw["function"]["name"]), None
    return None, raw


def _tool_choice_to_openai(choice: ToolChoice) -> str | JsonObject:
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequestError("tool_choice of type 'tool' needs a tool name")
        return {"type": "function", "function": {"name": choice.name}}
    return _CHOICE_TO_OPENAI[choice.type]


def _tools_to_openai(request: Request) -> JsonObject:
    tools = [t for t in map(_tool_to_openai, request.tools) if t is not None]
    if not tools:
        return {}
    out: JsonObject = {"tools": tools}
    choice = request.tool_choice
    if choice is not None:
        out["tool_choice"] = _tool_choice_to_openai(choice)
        if choice.disable_parallel_tool_use and "parallel_tool_calls" not in request.extra:
            out["parallel_tool_calls"] = False
    return out


# --- requests: OpenAI -> canonical -----------------------------------------------------------


class _Conversation:
    """Folds OpenAI messages into canonical system blocks and messages."""

    def __init__(self) -> None:
        self.system: list[TextBlock] = []
        self.system_role: Literal["system", "developer"] | None = None
        self.messages: list[Message] = []

    def add(self, raw: JsonObject) -> None:
        role = raw["role"]
        if role in ("system", "developer"):
            self.system_role = self.system_role or role
            self.system.extend(_text_blocks(raw["content"]))
        elif role == "tool":
            self._add_tool_result(raw)
        elif role == "user":
            self.messages.append(_user_from_openai(raw))
        elif role == "assistant":
            self.messages.append(_assistant_from_openai(raw))
        else:
            raise WireFormatError(f"message role {role!r} is not supported")

    def _add_tool_result(self, raw: JsonObject) -> None:
        content = raw["content"]
        result = content if isinstance(content, str) else _text_blocks(content)
        block = ToolResultBlock(tool_use_id=raw["tool_call_id"], content=result)
        if self.messages and _only_tool_results(self.messages[-1]):
            self.messages[-1].content.append(block)
        else:
            self.messages.append(Message(role="user", content=[block]))


def _only_tool_results(message: Message) -> bool:
    """Whether ``message`` holds only tool results (it came from ``tool`` messages)."""
    return bool(message.content) and all(isinstance(b, ToolResultBlock) for b in message.content)


def _user_from_openai(raw: JsonObject) -> Message:
    content = raw["content"]
    if isinstance(content, str):
        blocks: list[ContentBlock] = [TextBlock(text=content)]
    else:
        blocks = [_user_part(p) for p in content]
    return Message(role="user", content=blocks, **_fields_except(raw, "role", "content"))


def _assistant_from_openai(raw: JsonObject) -> Message:
    blocks: list[ContentBlock] = [*_text_blocks(raw.get("content"))]
    blocks += [_tool_use_from_openai(c) for c in raw.get("tool_calls") or []]
    extras = _fields_except(raw, "role", "content", "tool_calls")
    return Message(role="assistant", content=blocks, **extras)


def _stop_from_openai(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _request_extra(body: JsonObject, raw_choice: Any) -> JsonObject:
    extra = {k: v for k, v in body.items() if k not in _REQUEST_FIELDS}
    if "max_completion_tokens" in body and "max_tokens" in body:
        extra["max_tokens"] = body["max_tokens"]
    if raw_choice is not None:
        extra["tool_choice"] = raw_choice
    return extra


def _request_from_openai(body: JsonObject) -> Request:
    conversation = _Conversation()
    for raw in body["messages"]:
        conversation.add(raw)
    tool_choice, raw_choice = _tool_choice_from_openai(body.get("tool_choice"))
    return Request(
        model=body.get("model"),
        messages=conversation.messages,
        system=conversation.system,
        system_role=conversation.system_role,
        max_tokens=body.get("max_completion_tokens", body.get("max_tokens")),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stop=_stop_from_openai(body.get("stop")),
        tools=[_tool_from_openai(t) for t in body.get("tools") or []],
        tool_choice=tool_choice,
        extra=_request_extra(body, raw_choice),
        origin="openai",
    )


def request_from_openai(body: JsonObject) -> Request:
    """The canonical form of a Chat Completions request body.

    Raises :class:`InvalidRequestError` for a body that is not a valid request (checked by
    :func:`~tierwise.wire.validate_openai.validate_openai`, the error's ``param`` naming the
    field), or that uses what tierwise cannot carry (custom tools, the deprecated
    ``function`` role, ``n`` > 1). Content parts it does not model (``input_audio``,
    ``file``) are kept verbatim as :class:`OtherBlock`.
    """
    validate_openai(body)
    try:
        return _request_from_openai(body)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise InvalidRequestError(f"invalid Chat Completions request: {_describe(exc)}") from None


# --- requests: canonical -> OpenAI -----------------------------------------------------------


def _advice_text(block: AdvisorToolResultBlock) -> str | None:
    if block.content.get("type") != "advisor_result":
        return None
    return f"Advisor's advice:\n{block.content.get('text', '')}"


def _assistant_to_openai(message: Message) -> JsonObject:
    texts: list[TextBlock] = []
    calls: list[JsonObject] = []
    for block in message.content:
        if isinstance(block, TextBlock):
            texts.append(block)
        elif isinstance(block, ToolUseBlock):
            calls.append(_tool_call_to_openai(block))
        elif isinstance(block, AdvisorToolResultBlock) and (advice := _advice_text(block)):
            texts.append(TextBlock(text=advice))
    content = _text_content(texts) if texts else (None if calls else "")
    out: JsonObject = {**_wire_extras(message), "role": "assistant", "content": content}
    if calls:
        out["tool_calls"] = calls
    return out


def _tool_message(block: ToolResultBlock) -> JsonObject:
    """A tool message; it carries text only (images follow in a user message)."""
    content: str | list[JsonObject] = block.content if isinstance(block.content, str) else ""
    if not isinstance(block.content, str):
        texts = [b for b in block.content if isinstance(b, TextBlock)]
        content = [_text_part(b) for b in texts] if texts else ""
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": content}


def _tool_images(block: ToolResultBlock) -> list[ImageBlock]:
    content = block.content
    return [] if isinstance(content, str) else [b for b in content if isinstance(b, ImageBlock)]


def _user_content(blocks: Sequence[TextBlock | ImageBlock | OtherBlock]) -> str | list[JsonObject]:
    plain = _plain_text(blocks)
    return [_user_part_to_openai(b) for b in blocks] if plain is None else plain


def _user_to_openai(message: Message) -> list[JsonObject]:
    """Tool messages for the tool results, then one user message for the rest."""
    results = [b for b in message.content if isinstance(b, ToolResultBlock)]
    out = [_tool_message(r) for r in results]
    rest = [b for b in message.content if isinstance(b, TextBlock | ImageBlock | OtherBlock)]
    rest += [image for r in results for image in _tool_images(r)]
    if rest:
        out.append({**_wire_extras(message), "role": "user", "content": _user_content(rest)})
    return out


def _messages_to_openai(request: Request) -> list[JsonObject]:
    out: list[JsonObject] = []
    if request.system:
        role = request.system_role or "system"
        out.append({"role": role, "content": _text_content(request.system)})
    for message in request.messages:
        if message.role == "assistant":
            out.append(_assistant_to_openai(message))
        else:
            out.extend(_user_to_openai(message))
    return out


def _limit_key(extra: JsonObject, reasoning: bool) -> str:
    """The name the token limit is sent under; removes the limit fields from ``extra``."""
    limit_key = "max_completion_tokens" if "max_completion_tokens" in extra else "max_tokens"
    if reasoning:
        limit_key = "max_completion_tokens"
        extra.pop("max_tokens", None)
    extra.pop(limit_key, None)
    return limit_key


def request_to_openai(request: Request, model_name: str, *, reasoning: bool = False) -> JsonObject:
    """A Chat Completions request body for ``model_name`` (the host's own model name).

    ``reasoning``: the model is an OpenAI reasoning model, which takes its limit only as
    ``max_completion_tokens`` and refuses ``temperature``, ``top_p`` and ``stop``; those
    are left out (a request routed to it still runs, with the model's own sampling).
    """
    own = request.extra if request.origin in (None, "openai") else {}
    extra = {k: v for k, v in own.items() if k not in _FOREIGN_BODY_FIELDS}
    limit_key = _limit_key(extra, reasoning)
    body: JsonObject = {**extra, "model": model_name, "messages": _messages_to_openai(request)}
    options: dict[str, float | None] = {limit_key: request.max_tokens}
    if not reasoning:
        options |= {"temperature": request.temperature, "top_p": request.top_p}
    body |= {k: v for k, v in options.items() if v is not None}
    if request.stop and not reasoning:
        body["stop"] = list(request.stop)
    return body | _tools_to_openai(request)


# --- usage -----------------------------------------------------------------------------------


def usage_from_openai(usage: JsonObject) -> Usage:
    """Canonical usage; OpenAI's ``prompt_tokens`` *includes* cached and cache-written tokens.

    ``input_tokens = prompt_tokens - cached_tokens - cache_write_tokens`` (never below 0);
    cache writes (reported by some hosts, TTL unknown) count as 5-minute writes;
    ``output_tokens = completion_tokens``, which includes the reasoning tokens. Fields not
    modelled (``audio_tokens``, a host's ``cost`` …) are kept in the extra field ``openai``.
    """
    prompt = usage.get("prompt_tokens") or 0
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or 0
    written = details.get("cache_write_tokens") or 0
    completion_details = usage.get("completion_tokens_details") or {}
    canonical = Usage(
        input_tokens=max(0, prompt - cached - written),
        output_tokens=usage.get("completion_tokens") or 0,
        cache_read_tokens=cached,
        cache_write_5m_tokens=written,
        reasoning_tokens=completion_details.get("reasoning_tokens"),
    )
    leftovers = _usage_leftovers(usage)
    return canonical.model_copy(update={"openai": leftovers}) if leftovers else canonical


def _billed_counts(usage: Usage) -> TokenCounts:
    """The top-level counts, or the sum over ``iterations`` when those are present."""
    if not usage.iterations:
        return usage
    fields = TokenCounts.model_fields
    return TokenCounts(**{f: sum(getattr(i, f) for i in usage.iterations) for f in fields})


def usage_to_openai(usage: Usage) -> JsonObject:
    """OpenAI usage; with ``iterations`` (advisor calls …) the counts are summed over them."""
    counts = _billed_counts(usage)
    prompt = counts.input_tokens + counts.cache_read_tokens + counts.cache_write_tokens
    details: JsonObject = {"cached_tokens": counts.cache_read_tokens}
    if counts.cache_write_tokens:
        details["cache_write_tokens"] = counts.cache_write_tokens
    out: JsonObject = {
        "prompt_tokens": prompt,
        "completion_tokens": counts.output_tokens,
        "total_tokens": prompt + counts.output_tokens,
        "prompt_tokens_details": details,
    }
    if usage.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return _merge_usage(out, (usage.model_extra or {}).get("openai") or {})


def _usage_leftovers(usage: JsonObject) -> JsonObject:
    out = {k: v for k, v in usage.items() if k not in _USAGE_FIELDS}
    for key, modelled in _USAGE_DETAIL_FIELDS.items():
        details = usage.get(key)
        rest = {k: v for k, v in (details or {}).items() if k not in modelled}
        if rest:
            out[key] = rest
    return out


def _merge_usage(usage: JsonObject, leftovers: JsonObject) -> JsonObject:
    """``usage`` with the fields of ``leftovers`` it lacks (one level into the details)."""
    for key, value in leftovers.items():
        if isinstance(value, dict) and isinstance(usage.get(key), dict):
            usage[key] = {**value, **usage[key]}
        else:
            usage.setdefault(key, value)
    return usage


# --- responses -------------------------------------------------------------------------------


def _leftovers(body: JsonObject, choice: JsonObject, message: JsonObject) -> JsonObject:
    parts = {
        "completion": _fields_except(body, "id", "object", "model", "choices", "usage"),
        "choice": _fields_except(choice, "index", "message"),
        "message": _fields_except(message, "role", "content", "tool_calls", "refusal"),
    }
    return {k: v for k, v in parts.items() if v}


def _response_from_openai(body: JsonObject, model_id: str) -> Response:
    choice = body["choices"][0]
    message = choice["message"]
    refusal = message.get("refusal")
    content: list[ContentBlock] = [*_text_blocks(message.get("content"))]
    content += [TextBlock(text=refusal)] if refusal else []
    content += [_tool_use_from_openai(c) for c in message.get("tool_calls") or []]
    return Response(
        id=body["id"],
        model=model_id,
        content=content,
        stop_reason="refusal" if refusal else _stop_reason(choice.get("finish_reason")),
        usage=usage_from_openai(body["usage"]) if body.get("usage") else Usage(unreported=True),
        upstream_model=body.get("model"),
        openai=_leftovers(body, choice, message),
    )


def response_from_openai(body: JsonObject, model_id: str) -> Response:
    """The canonical form of a ``chat.completion`` object; ``model_id`` is the catalog id.

    A ``refusal`` becomes a text block with stop reason ``refusal``. Raises
    :class:`WireFormatError` for a body that is not a completion.
    """
    try:
        return _response_from_openai(body, model_id)
    except WireFormatError:
        raise
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
        raise WireFormatError(f"not a chat completion: {_describe(exc)}") from None


def _response_message(response: Response, as_refusal: bool, rest: JsonObject) -> JsonObject:
    text = response.text()
    calls = [_tool_call_to_openai(b) for b in response.tool_calls()]
    content = None if as_refusal or (calls and not text) else text
    message: JsonObject = {"role": "assistant", "content": content}
    message |= {"refusal": text if as_refusal else None, **rest}
    if calls:
        message["tool_calls"] = calls
    return message


def response_to_openai(response: Response, model_name: str) -> JsonObject:
    """A ``chat.completion`` object; thinking and server-tool blocks are left out."""
    wire: JsonObject = (response.model_extra or {}).get("openai") or {}
    choice_rest = dict(wire.get("choice", {}))
    raw_finish = choice_rest.pop("finish_reason", None)
    as_refusal = response.stop_reason == "refusal" and raw_finish == "stop"
    choice = {
        "index": 0,
        "message": _response_message(response, as_refusal, wire.get("message", {})),
        "logprobs": None,
        **choice_rest,
        "finish_reason": _finish_reason(response.stop_reason, raw_finish),
    }
    head = {"id": response.id, "object": "chat.completion", "created": int(time.time())}
    body = {**head, "model": model_name, **wire.get("completion", {}), "choices": [choice]}
    return body | {"usage": usage_to_openai(response.usage)}
