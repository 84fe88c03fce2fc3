"""The checks of an Anthropic Messages request body (``/v1/messages``, ``count_tokens``).

Checked: ``max_tokens`` 1..2**31-1 (optional here: ``count_tokens`` has none, and the gateway
sets a default where budgets need one), ``temperature`` and ``top_p`` 0..1, ``top_k`` >= 0,
``stop_sequences``, ``stream``, ``metadata``, ``system`` (a string or text blocks), roles
(``user``, ``assistant``), content blocks by type — the ones tierwise models in full (text,
image, document, tool use and results, thinking, the advisor's), the API's server-tool
results by their type only — image and PDF data (base64 that decodes to the media type
named), tools (client tools need an ``input_schema``; a server tool is a ``type`` and a
``name``; the advisor tool, which tierwise runs, a ``model`` and bounded ``max_uses`` and
``max_tokens``), ``tool_choice`` and ``thinking``. Other fields (``context_management``,
``container``, ``service_tier`` …) and block fields (``citations`` …) pass through as they are.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from annotated_types import Ge, Interval, MinLen
from pydantic import AfterValidator, Discriminator, Tag, TypeAdapter, ValidationError

from tierwise.advisor.tool import ADVISOR_TOOL_TYPE, MAX_USES
from tierwise.errors import InvalidRequestError
from tierwise.wire.validate import (
    MAX_TOKENS,
    Checked,
    ImageType,
    by,
    check_media,
    check_text,
    check_web_url,
    invalid,
    str_or_list,
)

SERVER_RESULT_BLOCKS = (
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
)
"""Block types of the API's server tools: known, passed through, not checked further."""


Unit = Annotated[float, Interval(ge=0, le=1)]
WebUrl = Annotated[str, AfterValidator(check_web_url)]


class _CacheControl(Checked):
    type: Literal["ephemeral"]
    ttl: NotRequired[Literal["5m", "1h"] | None]


class _Block(Checked):
    cache_control: NotRequired[_CacheControl | None]


class _TextBlock(_Block):
    type: Literal["text"]
    text: str
    citations: NotRequired[list[dict[str, Any]] | None]


# --- images and documents --------------------------------------------------------------------


class _Base64Image(Checked):
    type: Literal["base64"]
    media_type: ImageType
    data: str


def _is_the_image(source: _Base64Image) -> _Base64Image:
    check_media(source["data"], source["media_type"])
    return source


class _UrlSource(Checked):
    type: Literal["url"]
    url: WebUrl


class _FileSource(Checked):
    type: Literal["file"]
    file_id: str


_ImageSource = Annotated[
    Annotated[_Base64Image, AfterValidator(_is_the_image), Tag("#base64")]
    | Annotated[_UrlSource, Tag("#url")]
    | Annotated[_FileSource, Tag("#file")],
    by("type", ("base64", "url", "file")),
]


class _ImageBlock(_Block):
    type: Literal["image"]
    source: _ImageSource


class _Base64Pdf(Checked):
    type: Literal["base64"]
    media_type: Literal["application/pdf"]
    data: Annotated[str, AfterValidator(lambda data: check_media(data, "application/pdf"))]


class _PlainText(Checked):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


class _ContentSource(Checked):
    type: Literal["content"]
    content: Annotated[
        Annotated[str, Tag("#str")] | Annotated[list[dict[str, Any]], Tag("#list")],
        str_or_list("content blocks"),
    ]


_DocumentSource = Annotated[
    Annotated[_Base64Pdf, Tag("#base64")]
    | Annotated[_PlainText, Tag("#text")]
    | Annotated[_UrlSource, Tag("#url")]
    | Annotated[_ContentSource, Tag("#content")]
    | Annotated[_FileSource, Tag("#file")],
    by("type", ("base64", "text", "url", "content", "file")),
]


class _DocumentBlock(_Block):
    type: Literal["document"]
    source: _DocumentSource
    title: NotRequired[str | None]
    context: NotRequired[str | None]
    citations: NotRequired[dict[str, Any] | None]


class _SearchResultBlock(_Block):
    type: Literal["search_result"]
    source: str
    title: str
    content: list[_TextBlock]


# --- tool use and results, thinking ----------------------------------------------------------


class _ToolUseBlock(_Block):
    type: Literal["tool_use", "server_tool_use"]
    id: str
    name: Annotated[str, MinLen(1)]
    input: dict[str, Any]


_ResultPart = Annotated[
    Annotated[_TextBlock, Tag("#text")]
    | Annotated[_ImageBlock, Tag("#image")]
    | Annotated[_DocumentBlock, Tag("#document")]
    | Annotated[_SearchResultBlock, Tag("#search_result")],
    by("type", ("text", "image", "document", "search_result")),
]


class _ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str
    content: NotRequired[
        Annotated[
            Annotated[str, Tag("#str")] | Annotated[list[_ResultPart], Tag("#list")],
            str_or_list("text, image or document blocks"),
        ]
        | None
    ]
    is_error: NotRequired[bool | None]


class _ThinkingBlock(_Block):
    type: Literal["thinking"]
    thinking: str
    signature: NotRequired[str | None]


class _RedactedThinkingBlock(_Block):
    type: Literal["redacted_thinking"]
    data: str


class _AdvisorResultBlock(_Block):
    type: Literal["advisor_tool_result"]
    tool_use_id: str
    content: dict[str, Any]


class _ServerBlock(_Block):
    """A server tool's block (:data:`SERVER_RESULT_BLOCKS`): only its type is checked."""

    type: str


_ContentBlock = Annotated[
    Annotated[_TextBlock, Tag("#text")]
    | Annotated[_ImageBlock, Tag("#image")]
    | Annotated[_DocumentBlock, Tag("#document")]
    | Annotated[_SearchResultBlock, Tag("#search_result")]
    | Annotated[_ToolUseBlock, Tag("#tool_use")]
    | Annotated[_ToolUseBlock, Tag("#server_tool_use")]
    | Annotated[_ToolResultBlock, Tag("#tool_result")]
    | Annotated[_ThinkingBlock, Tag("#thinking")]
    | Annotated[_RedactedThinkingBlock, Tag("#redacted_thinking")]
    | Annotated[_AdvisorResultBlock, Tag("#advisor_tool_result")]
    | Annotated[_ServerBlock, Tag("#other")],
    by(
        "type",
        (
            "text",
            "image",
            "document",
            "search_result",
            "tool_use",
            "server_tool_use",
            "tool_result",
            "thinking",
            "redacted_thinking",
            "advisor_tool_result",
        ),
        SERVER_RESULT_BLOCKS,
    ),
]


class _Message(Checked):
    role: Literal["user", "assistant"]
    content: Annotated[
        Annotated[str, Tag("#str")] | Annotated[list[_ContentBlock], MinLen(1), Tag("#list")],
        str_or_list("content blocks"),
    ]


# --- tools, tool choice, thinking ------------------------------------------------------------


class _ClientTool(Checked):
    type: NotRequired[Literal["custom"] | None]
    name: Annotated[str, MinLen(1)]
    description: NotRequired[str | None]
    input_schema: dict[str, Any]
    cache_control: NotRequired[_CacheControl | None]


class _ServerTool(Checked):
    type: str
    name: Annotated[str, MinLen(1)]
    cache_control: NotRequired[_CacheControl | None]


class _AdvisorTool(_ServerTool):
    """The advisor tool, which tierwise runs itself (its consults count in the budget)."""

    model: Annotated[str, MinLen(1)]
    max_uses: NotRequired[Annotated[int, Interval(ge=0, le=MAX_USES)] | None]
    max_tokens: NotRequired[Annotated[int, Interval(ge=1, le=MAX_TOKENS)] | None]
    caching: NotRequired[_CacheControl | None]


def _tool_kind(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    if kind in (None, "custom"):
        return "#client"
    if isinstance(kind, str):
        return "#advisor" if kind == ADVISOR_TOOL_TYPE else "#server"
    return None


_Tool = Annotated[
    Annotated[_ClientTool, Tag("#client")]
    | Annotated[_AdvisorTool, Tag("#advisor")]
    | Annotated[_ServerTool, Tag("#server")],
    Discriminator(
        _tool_kind,
        custom_error_type="tool_type",
        custom_error_message="must be an object with a name, and a string type if any",
    ),
]


def _distinct(tools: list[Any]) -> list[Any]:
    """Tool names are unique, and one advisor tool at most (the one the gateway runs)."""
    names = [tool["name"] for tool in tools]
    if len(set(names)) < len(names):
        raise ValueError("tool names must be unique")
    if sum(tool.get("type") == ADVISOR_TOOL_TYPE for tool in tools) > 1:
        raise ValueError("a request may carry one advisor tool")
    return tools


class _AutoChoice(Checked):
    type: Literal["auto", "any"]
    disable_parallel_tool_use: NotRequired[bool | None]


class _NamedChoice(Checked):
    type: Literal["tool"]
    name: Annotated[str, MinLen(1)]
    disable_parallel_tool_use: NotRequired[bool | None]


class _NoChoice(Checked):
    type: Literal["none"]


_ToolChoice = Annotated[
    Annotated[_AutoChoice, Tag("#auto")]
    | Annotated[_AutoChoice, Tag("#any")]
    | Annotated[_NamedChoice, Tag("#tool")]
    | Annotated[_NoChoice, Tag("#none")],
    by("type", ("auto", "any", "tool", "none")),
]


class _ThinkingOn(Checked):
    type: Literal["enabled"]
    budget_tokens: Annotated[int, Interval(ge=1024, le=MAX_TOKENS)]


class _ThinkingOff(Checked):
    type: Literal["disabled", "adaptive"]


_Thinking = Annotated[
    Annotated[_ThinkingOn, Tag("#enabled")]
    | Annotated[_ThinkingOff, Tag("#disabled")]
    | Annotated[_ThinkingOff, Tag("#adaptive")],
    by("type", ("enabled", "disabled", "adaptive")),
]


class _Metadata(Checked):
    user_id: NotRequired[str | None]


# --- the body --------------------------------------------------------------------------------


class AnthropicBody(Checked):
    """The checked fields of a Messages (or ``count_tokens``) request body."""

    messages: Annotated[list[_Message], MinLen(1)]
    max_tokens: NotRequired[Annotated[int, Interval(ge=1, le=MAX_TOKENS)] | None]
    system: NotRequired[
        Annotated[
            Annotated[str, Tag("#str")] | Annotated[list[_TextBlock], Tag("#list")],
            str_or_list("text blocks"),
        ]
        | None
    ]
    temperature: NotRequired[Unit | None]
    top_p: NotRequired[Unit | None]
    top_k: NotRequired[Annotated[int, Ge(0)] | None]
    stop_sequences: NotRequired[list[str] | None]
    stream: NotRequired[bool | None]
    metadata: NotRequired[_Metadata | None]
    tools: NotRequired[Annotated[list[_Tool], AfterValidator(_distinct)] | None]
    tool_choice: NotRequired[_ToolChoice | None]
    thinking: NotRequired[_Thinking | None]
    service_tier: NotRequired[str | None]
    context_management: NotRequired[dict[str, Any] | None]
    mcp_servers: NotRequired[list[dict[str, Any]] | None]


_BODY = TypeAdapter(AnthropicBody)
CHAT_COMPLETIONS_FIELDS = frozenset(
    {
        "stream_options",
        "n",
        "max_completion_tokens",
        "stop",
        "response_format",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "parallel_tool_calls",
        "reasoning_effort",
        "modalities",
    }
)
"""Chat Completions' own fields, which the Messages API refuses (it takes no unknown field);
sent here they would be dropped in silence on the way to an OpenAI-compatible model."""


def validate_anthropic(body: dict[str, Any]) -> None:
    """Raise :class:`~tierwise.errors.InvalidRequestError` (``param``: the field at fault)
    unless ``body`` is a valid request."""
    try:
        _BODY.validator.validate_python(body)
    except ValidationError as exc:
        raise invalid(exc, "Anthropic Messages", "dots") from None
    if foreign := CHAT_COMPLETIONS_FIELDS.intersection(body):
        field = min(foreign)
        raise InvalidRequestError(
            f"invalid Anthropic Messages request: `{field}` is a Chat Completions field, "
            "not a Messages one",
            param=field,
        )
    check_text(body, "Anthropic Messages", "dots")


def require_max_tokens(body: dict[str, Any]) -> None:
    """``POST /v1/messages`` needs ``max_tokens`` (``count_tokens`` takes none)."""
    if body.get("max_tokens") is None:
        raise InvalidRequestError(
            "invalid Anthropic Messages request: `max_tokens` is required", param="max_tokens"
        )
