"""Model requests for workflows: plain text or JSON in the provider's structured output, and
reading a JSON answer back against a pydantic model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tierwise.catalog import ModelSpec
from tierwise.config import Settings
from tierwise.messages import Message, Request, TextBlock

M = TypeVar("M", bound=BaseModel)


class AnswerError(ValueError):
    """A model's JSON answer is unusable; the message says what is wrong, in one line."""


def user(text: str) -> Message:
    return Message(role="user", content=[TextBlock(text=text)])


def assistant(text: str) -> Message:
    return Message(role="assistant", content=[TextBlock(text=text or "(empty answer)")])


def _wire_options(
    spec: ModelSpec, settings: Settings, schema: dict[str, Any] | None, name: str
) -> dict[str, Any]:
    """``origin`` and ``extra`` for ``spec``'s wire format: the schema as its structured
    output."""
    row = settings.providers.get(spec.provider)
    kind = row.kind if row is not None else None
    if kind == "anthropic":
        if schema is None:
            return {}
        output = {"format": {"type": "json_schema", "schema": schema}}
        return {"origin": "anthropic", "extra": {"output_config": output}}
    if kind == "openai":
        extra: dict[str, Any] = {}
        if schema is not None:
            described = {"name": name, "strict": True, "schema": schema}
            extra["response_format"] = {"type": "json_schema", "json_schema": described}
        return {"origin": "openai", "extra": extra} if extra else {}
    return {}


def model_request(
    spec: ModelSpec,
    settings: Settings,
    *,
    system: str,
    messages: Sequence[Message],
    max_tokens: int,
    schema: dict[str, Any] | None = None,
    schema_name: str = "answer",
) -> Request:
    """A request to ``spec``; with ``schema``, the answer is asked for as JSON in the
    provider's structured output (Anthropic ``output_config``, OpenAI ``response_format``)."""
    return Request(
        messages=list(messages),
        system=[TextBlock(text=system)],
        max_tokens=max_tokens,
        **_wire_options(spec, settings, schema, schema_name),
    )


def unfenced(text: str) -> str:
    """``text`` without a surrounding Markdown code fence."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[-1].rsplit("```", 1)[0]
    return body.strip()


def parse_json_as(text: str, model: type[M]) -> M:
    """``text`` (JSON, maybe fenced) validated as ``model``; :class:`AnswerError` otherwise."""
    try:
        return model.model_validate(json.loads(unfenced(text)))
    except json.JSONDecodeError as exc:
        raise AnswerError(f"not JSON ({exc.msg})") from None
    except ValidationError as exc:
        raise AnswerError(validation_problem(exc)) from None


def validation_problem(exc: ValidationError) -> str:
    """The first problem of ``exc`` as ``where: what``."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "answer"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}"
