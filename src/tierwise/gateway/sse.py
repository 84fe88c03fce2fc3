"""The gateway's streaming response: Server-Sent Events over plain ASGI.

Starlette's ``StreamingResponse`` on uvicorn (ASGI spec 2.3) runs every stream in an anyio
task group — a second task sending the body and one listening for the client's disconnect,
under cancel scopes — about 0.2-0.4 ms of CPU per stream (``bench/gateway_layers.py``).
:class:`EventStream` sends the body from the request's own task and listens for the
disconnect in one small task that cancels it when the client goes. Semantics kept: the chunk
iterator is closed on every way out (so an abandoned upstream stream is closed and recorded
at once); a client gone mid-stream ends the response quietly; a cancellation from outside
(the drain deadline) goes on as it came.

While the stream says nothing for ``keepalive_s`` (a long consult of an emulated advisor, a
model thinking), an SSE comment line (``: ping``) goes out: proxies and load balancers that
cut idle connections keep it open, and SSE readers (both SDKs) skip comments.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send


class _HangUp:
    """Listens on ``receive`` for the client's disconnect; then cancels ``task``."""

    def __init__(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        self._receive = receive
        self._task = task
        self.fired = False
        self._listener = asyncio.ensure_future(self._listen())

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass  # not for us (the body was read before the stream began)
        self.fired = True
        self._task.cancel("the client disconnected mid-stream")

    def stop(self) -> None:
        self._listener.cancel()


PING = b": ping\n\n"


class _KeepAlive:
    """Sends :data:`PING` through ``send`` whenever ``seconds`` pass with nothing sent. Every
    send of the stream goes through :meth:`send`; a ping and a chunk never overlap. One timer
    re-armed each interval, a task only to send a ping: a stream shorter than the interval
    costs a timer made and cancelled."""

    def __init__(self, send: Send, seconds: float) -> None:
        self._send = send
        self._seconds = seconds
        self._quiet = True
        self._open = True
        self._busy = False
        self._pinging: asyncio.Future[None] | None = None
        self._ping_task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(seconds, self._beat) if seconds > 0 else None

    async def send(self, message: Message) -> None:
        if self._pinging is not None:
            await asyncio.shield(self._pinging)  # a ping on its way out goes first
        self._quiet, self._busy = False, True
        self._open = message["type"] == "http.response.start" or message.get("more_body", False)
        try:
            await self._send(message)
        finally:
            self._busy = False

    def _beat(self) -> None:
        if self._quiet and self._open and not self._busy and self._pinging is None:
            self._pinging = self._loop.create_future()
            self._ping_task = asyncio.ensure_future(self._ping())
        self._quiet = True
        self._timer = self._loop.call_later(self._seconds, self._beat)

    async def _ping(self) -> None:
        assert self._pinging is not None
        try:
            await self._send({"type": "http.response.body", "body": PING, "more_body": True})
        except OSError:  # the client is gone: the stream's own send or hang-up will say so
            self._open = False
        finally:
            self._pinging.set_result(None)
            self._pinging = None

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._ping_task is not None:
            self._ping_task.cancel()


class EventStream(Response):
    """``text/event-stream`` of ``chunks`` (already framed SSE bytes), status 200; a ping
    comment after every ``keepalive_s`` without a chunk (0: none)."""

    media_type = "text/event-stream"

    def __init__(
        self, chunks: AsyncIterator[bytes], headers: Mapping[str, str], keepalive_s: float = 0
    ) -> None:
        self.status_code = 200
        self.background = None
        self.chunks = chunks
        self.keepalive_s = keepalive_s
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        hang_up = _HangUp(receive, task)
        alive = _KeepAlive(send, self.keepalive_s)
        try:
            start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
            await alive.send(start)
            async for chunk in self.chunks:
                await alive.send({"type": "http.response.body", "body": chunk, "more_body": True})
            await alive.send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not hang_up.fired or task.cancelling() > 1:
                raise  # cancelled from outside (the drain deadline), not (only) by the client
            task.uncancel()  # the client is gone: nothing more to send, nobody to tell
        finally:
            alive.stop()
            hang_up.stop()
            if isinstance(self.chunks, AsyncGenerator):
                await self.chunks.aclose()
