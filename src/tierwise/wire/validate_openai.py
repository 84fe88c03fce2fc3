"""The checks of a Chat Completions request body (``POST /v1/chat/completions``).

Every field the gateway reads or that OpenAI documents with a type is checked here: ranges
(``temperature`` 0..2, ``top_p`` 0..1, token limits 1..2**31-1), roles and their content
parts, image data URLs (an image type, base64 that decodes to that image), tools and
``tool_choice``, ``stream_options``. ``n`` above 1 is refused: the gateway answers with one
choice. Fields not named here (a compatible host's own, such as ``repetition_penalty``) pass
through unchecked.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from annotated_types import Ge, Interval, MaxLen, MinLen
from pydantic import AfterValidator, Tag, TypeAdapter, ValidationError

from tierwise.wire.validate import (
    IMAGE_TYPES,
    MAX_TOKENS,
    Checked,
    by,
    check_media,
    check_text,
    check_web_url,
    decoded,
    invalid,
    str_or_list,
    str_or_object,
)

MAX_STOP = 4
"""Stop sequences OpenAI takes at most."""

Tokens = Annotated[int, Interval(ge=1, le=MAX_TOKENS)]
Penalty = Annotated[float, Interval(ge=-2, le=2)]


def _image_url(url: str) -> str:
    """A ``data:<image type>;base64,...`` URL whose data is that image, or a web URL."""
    if not url.startswith("data:"):
        return check_web_url(url)
    header, sep, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not sep or encoding != "base64":
        raise ValueError("a data URL must read data:<image type>;base64,<data>")
    if media_type not in IMAGE_TYPES:
        raise ValueError(f"the image type must be one of: {', '.join(IMAGE_TYPES)}")
    check_media(data, media_type)
    return url


def _file_data(data: str) -> str:
    """A ``data:<type>;base64,...`` URL or bare base64."""
    header, sep, payload = data.partition(",")
    if data.startswith("data:"):
        if not (sep and header.endswith(";base64")):
            raise ValueError("a data URL must read data:<media type>;base64,<data>")
        data = payload
    decoded(data)
    return data


def _one_choice(n: int) -> int:
    if n != 1:
        raise ValueError("only n = 1 is supported: the gateway answers with one choice")
    return n


# --- content parts ---------------------------------------------------------------------------


class _TextPart(Checked):
    type: Literal["text"]
    text: str


class _RefusalPart(Checked):
    type: Literal["refusal"]
    refusal: str


class _ImageUrl(Checked):
    url: Annotated[str, AfterValidator(_image_url)]
    detail: NotRequired[Literal["auto", "low", "high"] | None]


class _ImagePart(Checked):
    type: Literal["image_url"]
    image_url: _ImageUrl


class _InputAudio(Checked):
    data: Annotated[str, AfterValidator(decoded)]
    format: str


class _AudioPart(Checked):
    type: Literal["input_audio"]
    input_audio: _InputAudio


class _File(Checked):
    file_data: NotRequired[Annotated[str, AfterValidator(_file_data)] | None]
    file_id: NotRequired[str | None]
    filename: NotRequired[str | None]


def _names_a_file(file: _File) -> _File:
    if file.get("file_data") is None and file.get("file_id") is None:
        raise ValueError("a file needs file_data or file_id")
    return file


class _FilePart(Checked):
    type: Literal["file"]
    file: Annotated[_File, AfterValidator(_names_a_file)]


_UserPart = Annotated[
    Annotated[_TextPart, Tag("#text")]
    | Annotated[_ImagePart, Tag("#image_url")]
    | Annotated[_AudioPart, Tag("#input_audio")]
    | Annotated[_FilePart, Tag("#file")],
    by("type", ("text", "image_url", "input_audio", "file")),
]
_AssistantPart = Annotated[
    Annotated[_TextPart, Tag("#text")] | Annotated[_RefusalPart, Tag("#refusal")],
    by("type", ("text", "refusal")),
]
_TextContent = Annotated[
    Annotated[str, Tag("#str")] | Annotated[list[_TextPart], MinLen(1), Tag("#list")],
    str_or_list("text parts"),
]
_UserContent = Annotated[
    Annotated[str, Tag("#str")] | Annotated[list[_UserPart], MinLen(1), Tag("#list")],
    str_or_list("content parts"),
]
_AssistantContent = Annotated[
    Annotated[str, Tag("#str")] | Annotated[list[_AssistantPart], Tag("#list")],
    str_or_list("text or refusal parts"),
]


# --- messages --------------------------------------------------------------------------------


class _SystemMessage(Checked):
    role: Literal["system", "developer"]
    content: _TextContent
    name: NotRequired[str | None]


class _UserMessage(Checked):
    role: Literal["user"]
    content: _UserContent
    name: NotRequired[str | None]


class _CalledFunction(Checked):
    name: str
    arguments: str


class _ToolCall(Checked):
    id: NotRequired[str | None]
    type: NotRequired[Literal["function"]]
    function: _CalledFunction


class _AssistantMessage(Checked):
    role: Literal["assistant"]
    content: NotRequired[_AssistantContent | None]
    tool_calls: NotRequired[list[_ToolCall] | None]
    refusal: NotRequired[str | None]
    name: NotRequired[str | None]
    function_call: NotRequired[dict[str, Any] | None]
    audio: NotRequired[dict[str, Any] | None]


_SAID = ("content", "tool_calls", "function_call", "audio", "refusal")


def _says_something(message: _AssistantMessage) -> _AssistantMessage:
    if all(message.get(part) is None for part in _SAID):
        raise ValueError("an assistant message needs content or tool_calls")
    return message


class _ToolMessage(Checked):
    role: Literal["tool"]
    tool_call_id: str
    content: _TextContent


_Message = Annotated[
    Annotated[_SystemMessage, Tag("#system")]
    | Annotated[_SystemMessage, Tag("#developer")]
    | Annotated[_UserMessage, Tag("#user")]
    | Annotated[_AssistantMessage, AfterValidator(_says_something), Tag("#assistant")]
    | Annotated[_ToolMessage, Tag("#tool")],
    by("role", ("system", "developer", "user", "assistant", "tool")),
]


# --- tools -----------------------------------------------------------------------------------


class _Function(Checked):
    name: Annotated[str, MinLen(1)]
    description: NotRequired[str | None]
    parameters: NotRequired[dict[str, Any] | None]
    strict: NotRequired[bool | None]


class _FunctionTool(Checked):
    type: Literal["function"]
    function: _Function


class _ChosenFunction(Checked):
    name: str


class _FunctionChoice(Checked):
    type: Literal["function"]
    function: _ChosenFunction


class _AllowedTools(Checked):
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class _AllowedToolsChoice(Checked):
    type: Literal["allowed_tools"]
    allowed_tools: _AllowedTools


_ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("#str")]
    | Annotated[
        Annotated[_FunctionChoice, Tag("#function")]
        | Annotated[_AllowedToolsChoice, Tag("#allowed_tools")],
        by("type", ("function", "allowed_tools")),
        Tag("#object"),
    ],
    str_or_object(),
]


class _JsonSchema(Checked):
    name: Annotated[str, MinLen(1)]
    description: NotRequired[str | None]
    schema: NotRequired[dict[str, Any] | None]
    strict: NotRequired[bool | None]


class _ResponseFormat(Checked):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: NotRequired[_JsonSchema | None]


def _schema_given(response_format: _ResponseFormat) -> _ResponseFormat:
    if response_format["type"] == "json_schema" and response_format.get("json_schema") is None:
        raise ValueError("a json_schema response format needs json_schema")
    return response_format


class _StreamOptions(Checked):
    include_usage: NotRequired[bool | None]
    include_obfuscation: NotRequired[bool | None]


# --- the body --------------------------------------------------------------------------------


class OpenAIBody(Checked):
    """The checked fields of a Chat Completions request body."""

    messages: Annotated[list[_Message], MinLen(1)]
    max_tokens: NotRequired[Tokens | None]
    max_completion_tokens: NotRequired[Tokens | None]
    temperature: NotRequired[Annotated[float, Interval(ge=0, le=2)] | None]
    top_p: NotRequired[Annotated[float, Interval(ge=0, le=1)] | None]
    top_k: NotRequired[Annotated[int, Ge(-1)] | None]
    """Not OpenAI's; compatible hosts (vLLM) take it, -1 meaning no limit."""
    n: NotRequired[Annotated[int, AfterValidator(_one_choice)] | None]
    stream: NotRequired[bool | None]
    stream_options: NotRequired[_StreamOptions | None]
    stop: NotRequired[
        Annotated[
            Annotated[str, Tag("#str")] | Annotated[list[str], MaxLen(MAX_STOP), Tag("#list")],
            str_or_list("strings"),
        ]
        | None
    ]
    presence_penalty: NotRequired[Penalty | None]
    frequency_penalty: NotRequired[Penalty | None]
    logprobs: NotRequired[bool | None]
    top_logprobs: NotRequired[Annotated[int, Interval(ge=0, le=20)] | None]
    logit_bias: NotRequired[dict[str, Annotated[float, Interval(ge=-100, le=100)]] | None]
    seed: NotRequired[int | None]
    user: NotRequired[str | None]
    metadata: NotRequired[dict[str, str] | None]
    store: NotRequired[bool | None]
    parallel_tool_calls: NotRequired[bool | None]
    response_format: NotRequired[Annotated[_ResponseFormat, AfterValidator(_schema_given)] | None]
    reasoning_effort: NotRequired[
        Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None
    ]
    service_tier: NotRequired[str | None]
    modalities: NotRequired[list[str] | None]
    tools: NotRequired[list[_FunctionTool] | None]
    tool_choice: NotRequired[_ToolChoice | None]


_BODY = TypeAdapter(OpenAIBody)


def validate_openai(body: dict[str, Any]) -> None:
    """Raise :class:`~tierwise.errors.InvalidRequestError` (``param``: the field at fault)
    unless ``body`` is a valid request."""
    try:
        _BODY.validator.validate_python(body)
    except ValidationError as exc:
        raise invalid(exc, "Chat Completions", "brackets") from None
    check_text(body, "Chat Completions", "brackets")
