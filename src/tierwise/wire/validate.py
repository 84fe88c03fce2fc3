"""What both APIs' request checks share: the strict base model, tagged unions, media data.

A client's body is checked against typed models (:mod:`tierwise.wire.validate_openai`,
:mod:`tierwise.wire.validate_anthropic`) before it is translated: the fields the gateway
understands must have the type and range the API documents; fields it does not name are not
looked at and pass through to the upstream as they are. The models only check: their output
is thrown away, the translation reads the body itself.

Strict means JSON types as they are: ``true`` is not ``1``, ``1.0`` is not an integer, NaN
and infinities are no number. A union is tagged (:func:`by`, :func:`str_or_list`), so its
error names the object's ``type`` or ``role`` and not every member it might have been; tags
start with ``#`` and are left out of the error's path.
"""

from __future__ import annotations

import binascii
from typing import Any, Literal

from pydantic import ConfigDict, Discriminator, ValidationError
from pydantic_core import ErrorDetails, PydanticSerializationError, to_json
from typing_extensions import TypedDict

from tierwise.errors import InvalidRequestError

TAG_ERROR = "invalid_tag"
MAX_TOKENS = 2**31 - 1
"""The largest token count a body may name (what the APIs' own int32 fields take)."""
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
"""The image media types both APIs take."""
ImageType = Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
PathStyle = Literal["brackets", "dots"]
"""How an error names a field: OpenAI's ``messages[0].content``, Anthropic's
``messages.0.content``."""

_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "application/pdf": (b"%PDF-",),
}
_SHOWN_INPUT = 40
"""Characters of a wrong scalar value quoted back in an error message."""


class Checked(TypedDict):
    """A part of a request body: the fields it names are checked, others are ignored.

    Typed dicts rather than models: they validate four times faster, not building an object
    per block (the config is inherited by every part).
    """

    __pydantic_config__ = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)  # type: ignore[misc]


def by(field: str, tags: tuple[str, ...], others: tuple[str, ...] = ()) -> Discriminator:
    """Choose a union member by the object's ``field``: ``#<value>`` for ``tags``, ``#other``
    for ``others`` (known, not checked further); any other value (or not an object) is one
    clear error naming the field and the values it may take."""

    def tag(value: Any) -> str | None:
        kind = value.get(field) if isinstance(value, dict) else None
        if not isinstance(kind, str):
            return None
        return f"#{kind}" if kind in tags else "#other" if kind in others else None

    # the error's type carries the field and its message the values (an error context would
    # make the type unhashable, which a union of it cannot be)
    return Discriminator(
        tag, custom_error_type=f"{TAG_ERROR}:{field}", custom_error_message=", ".join(tags + others)
    )


def _str_or_list(value: Any) -> str | None:
    if isinstance(value, str):
        return "#str"
    return "#list" if isinstance(value, list) else None


def str_or_list(what: str) -> Discriminator:
    """Choose between ``Tag("#str")`` and ``Tag("#list")`` members; anything else is an error."""
    return Discriminator(
        _str_or_list,
        custom_error_type="string_or_list",
        custom_error_message=f"must be a string or a list of {what}",
    )


def _str_or_object(value: Any) -> str | None:
    if isinstance(value, str):
        return "#str"
    return "#object" if isinstance(value, dict) else None


def str_or_object() -> Discriminator:
    """Choose between ``Tag("#str")`` and ``Tag("#object")`` members."""
    return Discriminator(
        _str_or_object,
        custom_error_type="string_or_object",
        custom_error_message="must be a string or an object",
    )


def decoded(data: str) -> bytes:
    """Base64 ``data`` as bytes; a :class:`ValueError` when it is not strict base64."""
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ValueError("the data is not valid base64") from None
    if not raw:
        raise ValueError("the data is empty")
    return raw


def check_media(data: str, media_type: str) -> str:
    """``data`` (base64) when it decodes to a ``media_type`` file (its first bytes say so)."""
    raw = decoded(data)
    if media_type == "image/webp":
        matches = raw[:4] == b"RIFF" and raw[8:12] == b"WEBP"
    else:
        matches = raw.startswith(_MAGIC.get(media_type, (b"",)))
    if not matches:
        raise ValueError(f"the data is not {media_type} data")
    return data


def check_web_url(url: str) -> str:
    """An ``http(s)://`` URL with a host."""
    scheme, sep, rest = url.partition("://")
    if not (sep and scheme.lower() in ("http", "https") and rest and rest[0] not in "/?#"):
        raise ValueError("must be an http or https URL")
    return url


def _surrogate_at(value: Any, path: list[str | int]) -> list[str | int] | None:
    """The path to the first string (or key) holding a lone surrogate, if any."""
    if isinstance(value, str):
        return None if value.isascii() or _encodes(value) else path
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        if isinstance(key, str) and not _encodes(key):
            return [*path, key]
        if (found := _surrogate_at(item, [*path, key])) is not None:
            return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(body: dict[str, Any], what: str, style: PathStyle) -> None:
    """Refuse (400) a body with a lone UTF-16 surrogate in a string (JSON's ``"\\ud800"``):
    not text, it cannot be encoded to send upstream or to store. One pass of pydantic's
    serializer finds it (a few microseconds); only then is the body walked for the field."""
    try:
        to_json(body)
    except PydanticSerializationError as exc:
        if "surrogates not allowed" not in str(exc):
            return  # anything else is not this check's business
        path = _surrogate_at(body, []) or []
        param = _render(path, style) or None
        where = f"{param}: " if param else ""
        raise InvalidRequestError(
            f"invalid {what} request: {where}a string holds a lone UTF-16 surrogate "
            "(\\ud800-\\udfff), which is not text",
            param=param,
        ) from None


def _tag_field(error: ErrorDetails) -> str | None:
    """The field a tagged union chose by, when ``error`` is that choice failing on an object."""
    kind, _, field = error["type"].partition(":")
    return field if kind == TAG_ERROR and isinstance(error["input"], dict) else None


def _path(error: ErrorDetails, style: PathStyle) -> str:
    parts: list[str | int] = [p for p in error["loc"] if not str(p).startswith("#")]
    if (field := _tag_field(error)) is not None:
        parts.append(field)
    return _render(parts, style)


def _render(parts: list[str | int], style: PathStyle) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]" if style == "brackets" else f".{part}"
        else:  # a key is the client's: a lone surrogate in it is written as its escape
            name = part.encode("utf-8", "backslashreplace").decode()
            out += f".{name}" if out else name
    return out


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_INPUT else text[:_SHOWN_INPUT] + "..."


_PLAIN = {
    "a valid integer": "an integer",
    "a valid number": "a number",
    "a valid string": "a string",
    "a valid boolean": "true or false",
    "a valid list": "a list",
    "a valid dictionary": "an object",
}


def _said(error: ErrorDetails) -> str:
    """Pydantic's message in the words of an API error: ``must be an integer``."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "must be an object"
    if kind == "too_short":
        least = ctx.get("min_length")
        return "must not be empty" if least == 1 else f"must have at least {least} items"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    message = error["msg"].removeprefix("Value error, ")
    if message.startswith("Input should be "):
        wanted = message.removeprefix("Input should be ")
        return f"must be {_PLAIN.get(wanted, wanted)}"
    return message


def _reason(error: ErrorDetails) -> str:
    given = error["input"]
    if (field := _tag_field(error)) is not None:
        return f"must be one of: {error['msg']}, not {_shown(given.get(field))}"
    said = "must be an object" if error["type"].startswith(TAG_ERROR) else _said(error)
    scalar = isinstance(given, bool | int | float | str) or given is None
    return f"{said} (got {_shown(given)})" if scalar else said


def invalid(exc: ValidationError, what: str, style: PathStyle) -> InvalidRequestError:
    """The first error of ``exc`` as one 400, naming the field (``param``) and what is wrong."""
    error = exc.errors(include_url=False)[0]
    param = _path(error, style) or None
    if error["type"] == "missing":
        message = f"`{param}` is required"
    else:
        message = f"{param or 'the body'}: {_reason(error)}"
    return InvalidRequestError(f"invalid {what} request: {message}", param=param)
