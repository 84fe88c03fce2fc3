"""``POST /v1/tierwise/feedback``: a client says whether a task's answer was right.

Body: ``{"task_id": "...", "correct": true, "note": "..."}`` — the task id is the
``x-tierwise-task-id`` header of the response being judged. A key may judge only the tasks it
made (the gateway stores the key's name on each task, :data:`~tierwise.gateway.routes.TASK_KEY`);
another key's task answers 404 exactly as an unknown one does, so its existence does not leak.
The admin key may judge any task, and so may anyone when auth is off. The verdict is stored
as an outcome with ``source="user"`` (the key's name in its detail), which ``tierwise learn``
trusts above every other label. Errors use the OpenAI envelope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from tierwise.errors import InvalidRequestError, TaskNotFoundError
from tierwise.gateway.auth import Principal, principal_of
from tierwise.gateway.dialects import OPENAI
from tierwise.gateway.routes import TASK_KEY, error_response, read_json
from tierwise.gateway.service import Gateway, Running
from tierwise.ledger.records import TaskRecord

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


def may_judge(principal: Principal, task: TaskRecord, auth: bool) -> bool:
    """Whether ``principal`` may judge ``task``: its own, or any for the admin (or no auth)."""
    return not auth or principal.admin or task.metadata.get(TASK_KEY) == principal.name


async def _own_task(running: Running, principal: Principal, task_id: str) -> None:
    """TaskNotFoundError unless task ``task_id`` exists and ``principal`` may judge it."""
    found = await asyncio.to_thread(running.ledger.tasks, task_id)
    if not found or not may_judge(principal, found[0], running.auth.enabled):
        raise TaskNotFoundError(f"no task {task_id!r}")


def feedback_endpoint(gateway: Gateway) -> Endpoint:
    """The handler, bound to ``gateway``."""

    async def feedback(request: HttpRequest) -> Response:
        try:
            running = gateway.running
            principal = principal_of(request.scope)
            depth = gateway.config.max_json_depth
            given = _parse(await read_json(request, MAX_FEEDBACK_BYTES, depth))
            await _own_task(running, principal, given.task_id)
            note = f"via gateway key {principal.name}" + (f": {given.note}" if given.note else "")
            record = await running.engine.feedback(given.task_id, given.correct, note=note)
        except Exception as exc:
            return error_response(OPENAI, exc)
        return JSONResponse({"id": record.id, "task_id": record.task_id, "correct": record.correct})

    return feedback
