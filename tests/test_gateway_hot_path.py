"""The gateway's lean request path: its own SSE response and the tuned garbage collector.

:class:`EventStream` is driven as the ASGI app it is, with a ``receive`` that says when the
client hangs up; the GC tuning through a real gateway start and stop. The streaming wire
format itself is covered end to end with the official SDKs in ``test_gateway_openai.py`` /
``test_gateway_anthropic.py``; a client hanging up mid-stream in ``test_gateway_budgets.py``.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_harness import gateway_settings, running_gateway
from tierwise.gateway.service import Gateway
from tierwise.gateway.sse import EventStream

SCOPE: dict[str, Any] = {"type": "http", "asgi": {"spec_version": "2.3"}}


class Client:
    """An ASGI client: records what is sent, hangs up when told."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


class Chunks:
    """An SSE body: ``first`` at once, then (``stall``) nothing until it is closed."""

    def __init__(self, first: list[bytes], stall: bool = False) -> None:
        self.first, self.stall = first, stall
        self.closed = False
        self.reached_end = False

    async def __call__(self) -> AsyncIterator[bytes]:
        try:
            for chunk in self.first:
                yield chunk
            if self.stall:
                await asyncio.Event().wait()
            self.reached_end = True
        finally:
            self.closed = True


async def _sent_once(client: Client, count: int) -> None:
    while len(client.sent) < count:
        await asyncio.sleep(0)


async def test_every_chunk_is_sent_then_the_body_ends() -> None:
    client, chunks = Client(), Chunks([b"data: 1\n\n", b"data: [DONE]\n\n"])
    response = EventStream(chunks(), {"x-tierwise-task-id": "t1", "cache-control": "no-cache"})
    await response(SCOPE, client.receive, client.send)
    start, *body = client.sent
    headers = dict(start["headers"])
    assert start["status"] == 200
    assert headers[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert headers[b"x-tierwise-task-id"] == b"t1"
    assert [m["body"] for m in body] == [b"data: 1\n\n", b"data: [DONE]\n\n", b""]
    assert [m["more_body"] for m in body] == [True, True, False]
    assert chunks.reached_end and chunks.closed


async def test_a_client_hanging_up_mid_stream_closes_the_stream_quietly() -> None:
    client, chunks = Client(), Chunks([b"data: 1\n\n"], stall=True)
    running = asyncio.ensure_future(EventStream(chunks(), {})(SCOPE, client.receive, client.send))
    await _sent_once(client, 2)
    assert not chunks.closed  # stalled on the upstream, the client still there
    client.gone.set()
    await asyncio.wait_for(running, 5)  # ends without an error: nobody left to tell
    assert chunks.closed and not chunks.reached_end
    assert client.body == b"data: 1\n\n"  # no end-of-body claiming a complete answer
    assert not running.cancelled()


async def test_a_cancellation_from_outside_goes_on_and_closes_the_stream() -> None:
    client, chunks = Client(), Chunks([b"data: 1\n\n"], stall=True)
    running = asyncio.ensure_future(EventStream(chunks(), {})(SCOPE, client.receive, client.send))
    await _sent_once(client, 2)
    running.cancel("the drain deadline passed")
    with pytest.raises(asyncio.CancelledError):
        await running
    assert chunks.closed and not chunks.reached_end


async def test_a_failing_body_closes_and_raises() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        raise RuntimeError("upstream broke")

    client = Client()
    with pytest.raises(RuntimeError, match="upstream broke"):
        await EventStream(failing(), {})(SCOPE, client.receive, client.send)
    assert client.body == b"data: 1\n\n"


def test_a_started_gateway_freezes_the_heap_and_its_stop_undoes_it(tmp_path: Path) -> None:
    before = gc.get_threshold()
    settings = gateway_settings(f"sqlite:///{tmp_path / 'ledger.db'}")
    with running_gateway(settings):  # every gateway test serves with the heap frozen
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == settings.gateway.gc_gen0_threshold
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


async def test_gc_tuning_is_a_setting(tmp_path: Path) -> None:
    settings = gateway_settings(f"sqlite:///{tmp_path / 'ledger.db'}", gateway={"gc_freeze": False})
    before = gc.get_threshold()
    gateway = Gateway(settings)
    await gateway.start()
    try:
        assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
    finally:
        await gateway.stop()


def test_tune_gc_freezes_what_lives_now_and_only_later_objects_are_collected() -> None:
    from tierwise.gateway.gc_tuning import tune_gc  # noqa: PLC0415

    before = gc.get_threshold()
    undo = tune_gc(0)  # 0: the youngest generation's threshold left as it is
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == before
        frozen = gc.get_freeze_count()
        young: list[object] = []
        young.append(young)  # a cycle made after the freeze: still collectable
        del young
        assert gc.collect() >= 1
        assert gc.get_freeze_count() == frozen  # the frozen heap was not walked or freed
    finally:
        undo()
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
