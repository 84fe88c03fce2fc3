"""``POST /v1/tierwise/feedback``: a client says whether a task's answer was right.

Body: ``{"task_id": "...", "correct": true, "note": "..."}`` — the task id is the
``x-tierwise-task-id`` header of the response being judged. Any authenticated key may send
feedback; it is stored as an outcome with ``source="user"`` (the key's name in its detail),
which ``tierwise learn`` trusts above every other label. Errors use the OpenAI envelope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from tierwise.errors import InvalidRequestError
from tierwise.gateway.dialects import OPENAI
from tierwise.gateway.routes import error_response, read_json
from tierwise.gateway.service import Gateway

MAX_FEEDBACK_BYTES = 64 * 1024

Endpoint = Callable[[HttpRequest], Awaitable[Response]]


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    task_id: str = Field(min_length=1)
    correct: bool
    note: str = ""


def _parse(body: dict[str, Any]) -> Feedback:
    try:
        return Feedback.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidRequestError(f"invalid feedback: {where}: {first['msg']}") from None


def feedback_endpoint(gateway: Gateway) -> Endpoint:
    """The handler, bound to ``gateway``."""

    async def feedback(request: HttpRequest) -> Response:
        try:
            running = gateway.running
            principal = await running.auth.authenticate(request.headers)
            given = _parse(await read_json(request, MAX_FEEDBACK_BYTES))
            note = f"via gateway key {principal.name}" + (f": {given.note}" if given.note else "")
            record = await running.engine.feedback(given.task_id, given.correct, note=note)
        except Exception as exc:
            return error_response(OPENAI, exc)
        return JSONResponse({"id": record.id, "task_id": record.task_id, "correct": record.correct})

    return feedback
