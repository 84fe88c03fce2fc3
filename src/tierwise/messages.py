"""Canonical messages: the one shape every part of tierwise speaks.

The block model follows Anthropic's Messages API (the richer of the two wire formats); the
adapters in :mod:`tierwise.wire` translate to and from Anthropic Messages and OpenAI Chat
Completions. Blocks keep fields they do not name (``extra="allow"``), so a vendor field such
as ``cache_control`` or ``citations`` survives a round trip untouched.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

JsonObject = dict[str, Any]


class _Block(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextBlock(_Block):
    type: Literal["text"] = "text"
    text: str


class ImageBlock(_Block):
    """An image; ``source`` is Anthropic's shape: base64 (media_type, data) or url (url)."""

    type: Literal["image"] = "image"
    source: JsonObject


class ToolUseBlock(_Block):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: JsonObject = Field(default_factory=dict)


class OtherBlock(_Block):
    """A block type tierwise does not model (``document``, ``web_search_tool_result``, ...).

    Kept verbatim (all its fields are extras), so it survives a round trip untouched.
    """

    type: str


def _block_tagger(known: frozenset[str]) -> Discriminator:
    """A discriminator that sends any block ``type`` outside ``known`` to :class:`OtherBlock`."""

    def tag(value: Any) -> str:
        if isinstance(value, OtherBlock):
            return "other"
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return kind if kind in known else "other"

    return Discriminator(tag)


ToolResultContent = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[OtherBlock, Tag("other")],
    _block_tagger(frozenset({"text", "image"})),
]


class ToolResultBlock(_Block):
    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str
    content: str | list[ToolResultContent] = ""
    is_error: bool | None = None


class ThinkingBlock(_Block):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Block):
    type: Literal["redacted_thinking"] = "redacted_thinking"
    data: str


class ServerToolUseBlock(_Block):
    """A server-side tool call (e.g. the advisor: ``name="advisor"``, empty ``input``)."""

    type: Literal["server_tool_use"] = "server_tool_use"
    id: str
    name: str
    input: JsonObject = Field(default_factory=dict)


class AdvisorToolResultBlock(_Block):
    """The advisor's answer, kept verbatim.

    ``content`` is one of ``{"type": "advisor_result", "text", "stop_reason"}``,
    ``{"type": "advisor_redacted_result", "encrypted_content", "stop_reason"}`` or
    ``{"type": "advisor_tool_result_error", "error_code"}``.
    """

    type: Literal["advisor_tool_result"] = "advisor_tool_result"
    tool_use_id: str
    content: JsonObject


_KNOWN_BLOCKS = frozenset(
    {
        "text",
        "image",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "advisor_tool_result",
    }
)

ContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")]
    | Annotated[ServerToolUseBlock, Tag("server_tool_use")]
    | Annotated[AdvisorToolResultBlock, Tag("advisor_tool_result")]
    | Annotated[OtherBlock, Tag("other")],
    _block_tagger(_KNOWN_BLOCKS),
]
"""Any content block; a ``type`` tierwise does not model becomes an :class:`OtherBlock`."""

Role = Literal["user", "assistant"]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Role
    content: list[ContentBlock]

    def text(self) -> str:
        """The message's text blocks joined, for logs and classifiers."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))


class Tool(BaseModel):
    """A tool the model may call.

    A client tool has ``name``, ``description`` and ``input_schema``; a server tool such as
    ``{"type": "advisor_20260301", "name": "advisor", "model": ...}`` carries its ``type``
    and its own fields (kept as extras).
    """

    model_config = ConfigDict(extra="allow")

    name: str
    type: str | None = None
    description: str | None = None
    input_schema: JsonObject | None = None


class ToolChoice(BaseModel):
    """``auto`` | ``any`` (must call some tool) | ``tool`` (must call ``name``) | ``none``."""

    model_config = ConfigDict(extra="allow")

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Request(BaseModel):
    """One model request in canonical form.

    ``model`` is a catalog id (``provider:model``) or ``None`` when the policy decides.
    ``extra`` carries body fields tierwise does not model (passed to the upstream as they
    are); ``headers`` carries pass-through headers such as ``anthropic-beta``.
    """

    model: str | None = None
    messages: list[Message]
    system: list[TextBlock] = Field(default_factory=list)
    system_role: Literal["system", "developer"] | None = None
    """OpenAI wire only: the role ``system`` arrived in, so it is sent back the same way."""
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = Field(default_factory=list)
    tools: list[Tool] = Field(default_factory=list)
    tool_choice: ToolChoice | None = None
    thinking: JsonObject | None = None
    metadata: JsonObject = Field(default_factory=dict)
    extra: JsonObject = Field(default_factory=dict)
    origin: Literal["anthropic", "openai"] | None = None
    """The wire format the request arrived in; ``extra`` holds that format's body fields
    and is forwarded only to an upstream of the same format."""
    headers: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_prompt(cls, prompt: str, *, model: str | None = None, **fields: Any) -> Request:
        """A single-turn request with one user text message."""
        message = Message(role="user", content=[TextBlock(text=prompt)])
        return cls(model=model, messages=[message], **fields)

    def prompt_text(self) -> str:
        """The last user message's text: what a router or a log reads as "the task"."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        return ""


IterationKind = Literal["message", "advisor_message", "compaction", "fallback_message"]


class TokenCounts(BaseModel):
    """Tokens on the four billing axes (cache writes split by TTL)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_write_tokens
            + self.cache_read_tokens
        )


class UsageIteration(TokenCounts):
    """One sampling iteration of a response (Anthropic's ``usage.iterations[]``).

    ``model`` is the upstream model name, or ``None`` for the request's own (executor) model.
    """

    kind: str = "message"
    model: str | None = None


class Usage(TokenCounts):
    """Token usage of one response.

    When ``iterations`` is non-empty it is the billing truth: each entry is billed at its own
    model's prices, and the top-level figures (which cover only the first executor iteration
    for input and cache reads) are informational. ``estimated`` marks counts tierwise
    estimated from text rather than read from the upstream. Vendor usage fields tierwise does
    not model (e.g. Anthropic's ``service_tier``, ``server_tool_use``) are kept as extras.
    """

    model_config = ConfigDict(extra="allow")

    iterations: list[UsageIteration] = Field(default_factory=list)
    unreported: bool = False
    """The upstream sent no usage at all: the counts are not zeros but unknown."""
    reasoning_tokens: int | None = None
    estimated: bool = False


StopReason = Literal[
    "end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal", "error"
]


class Response(BaseModel):
    """One model response in canonical form; ``model`` is the catalog id that actually ran."""

    model_config = ConfigDict(extra="allow")

    id: str
    model: str
    content: list[ContentBlock] = Field(default_factory=list)
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage = Field(default_factory=Usage)

    def text(self) -> str:
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))

    def tool_calls(self) -> list[ToolUseBlock]:
        return [b for b in self.content if isinstance(b, ToolUseBlock)]


# --- streaming -------------------------------------------------------------------------------
# Canonical stream events mirror Anthropic's event sequence; OpenAI chunks are mapped onto it.


class MessageStart(BaseModel):
    type: Literal["message_start"] = "message_start"
    message: Response


class BlockStart(BaseModel):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    block: ContentBlock


class BlockDelta(BaseModel):
    """A piece of a block; ``delta`` is Anthropic's delta object (``text_delta``,
    ``input_json_delta``, ``thinking_delta``, ``signature_delta``, ``citations_delta``)."""

    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: JsonObject


class BlockStop(BaseModel):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class MessageDelta(BaseModel):
    """End-of-message facts: stop reason and the usage known so far (cumulative)."""

    type: Literal["message_delta"] = "message_delta"
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage = Field(default_factory=Usage)


class MessageStop(BaseModel):
    type: Literal["message_stop"] = "message_stop"


StreamEvent = Annotated[
    MessageStart | BlockStart | BlockDelta | BlockStop | MessageDelta | MessageStop,
    Field(discriminator="type"),
]
