"""A fake upstream for bench/hostile_clients.py: counts what reaches it and misbehaves on cue.

It speaks the formats of bench/fake_upstream.py (Anthropic ``/v1/messages``, OpenAI
``/v1/chat/completions``, streaming or not) from a thread of the bench's own process, and
keeps every request it got (path, headers, body) and how many connections it accepted, so
that the bench can tell what the gateway forwarded and which models it called. A word in
the request body switches its behaviour:

* ``ECHO_KEY`` — a 401 whose message echoes the credential the gateway sent (as OpenAI and
  Anthropic do with a wrong key); ``ECHO_KEY_500`` — the same in a 500;
  ``ECHO_KEY_STREAM`` — a stream that starts, then ends in an error event echoing it;
* ``FAIL_HAIKU`` — a 529 (overloaded) for any model named ``*haiku*``, so failover runs;
* ``BIG_STREAM`` — a stream of :data:`BIG_CHUNKS` large chunks sent as fast as the reader
  takes them (a client that does not read fills every buffer on the way).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import fake_upstream as fu

BIG_CHUNKS = 8000
BIG_TEXT = "x" * 4096
CHUNKS = 20
"""Output tokens of every answer (one per chunk)."""
LATENCY_S = 0.02


@dataclass
class Seen:
    """One request the upstream got."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            return None


@dataclass
class Upstream:
    """What the upstream has seen so far (appended to from its thread)."""

    ports: list[int] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    latency_s: float = LATENCY_S

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    def models_since(self, mark: int) -> list[str]:
        """Every ``model`` named anywhere in the request bodies after the first ``mark``."""
        found: list[str] = []
        for seen in self.requests[mark:]:
            _models(seen.json(), found)
        return found


def _models(value: Any, found: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "model" and isinstance(item, str):
                found.append(item)
            else:
                _models(item, found)
    elif isinstance(value, list):
        for item in value:
            _models(item, found)


async def _read(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    path = parts[1] if len(parts) > 1 else ""
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return path, headers, b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = int(headers.get("content-length", "0") or 0)
    return path, headers, await reader.readexactly(length) if length else b""


def _error(path: str, status: int, message: str) -> bytes:
    if path.endswith("/messages"):
        kind = "authentication_error" if status == 401 else "api_error"
        payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        payload = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    reason = {401: b"Unauthorized", 500: b"Internal Server Error", 529: b"Overloaded"}
    return fu._json_response(status, reason.get(status, b"Error"), payload)


async def _big_stream(writer: asyncio.StreamWriter, model: str) -> None:
    head, _, tail = fu.openai_stream(model, 1, False)
    delta = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model}
    delta["choices"] = [{"index": 0, "delta": {"content": BIG_TEXT}, "finish_reason": None}]
    frame = fu._data(delta)
    writer.write(fu._SSE_HEAD + b"".join(b"%x\r\n%s\r\n" % (len(f), f) for f in head))
    for _ in range(BIG_CHUNKS):
        writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        await writer.drain()
    writer.write(b"".join(b"%x\r\n%s\r\n" % (len(f), f) for f in tail) + b"0\r\n\r\n")


async def _failing_stream(
    writer: asyncio.StreamWriter, model: str, anthropic: bool, message: str
) -> None:
    """The stream's first events, then an in-band error carrying ``message``."""
    if anthropic:
        head, _, _ = fu.anthropic_stream(model, 1)
        error = {"type": "error", "error": {"type": "overloaded_error", "message": message}}
        frames = [*head, fu._sse_event(error)]
    else:
        head, _, _ = fu.openai_stream(model, 1, False)
        frames = [*head, fu._data({"error": {"message": message, "type": "server_error"}})]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(f), f) for f in frames)
    writer.write(fu._SSE_HEAD + chunks + b"0\r\n\r\n")


async def _answer(writer: asyncio.StreamWriter, seen: Seen, latency_s: float) -> None:
    path, body = seen.path.split("?")[0], seen.body
    if not path.endswith(("/messages", "/chat/completions")):
        writer.write(fu._json_response(404, b"Not Found", {"error": {"message": "not found"}}))
        return
    request = seen.json()
    if not isinstance(request, dict):
        writer.write(_error(path, 400, "body is not a JSON object"))
        return
    model = str(request.get("model", "bench-model"))
    credential = seen.headers.get("x-api-key") or seen.headers.get("authorization", "")
    await asyncio.sleep(latency_s)
    anthropic = path.endswith("/messages")
    if b"ECHO_KEY_500" in body:
        writer.write(_error(path, 500, f"internal error while checking key {credential}"))
    elif b"ECHO_KEY_STREAM" in body and request.get("stream") is True:
        await _failing_stream(writer, model, anthropic, f"overloaded (key {credential})")
    elif b"ECHO_KEY" in body:
        writer.write(_error(path, 401, f"Incorrect API key provided: {credential}"))
    elif b"FAIL_HAIKU" in body and "haiku" in model:
        writer.write(_error(path, 529, "Overloaded"))
    elif request.get("stream") is True and b"BIG_STREAM" in body and not anthropic:
        await _big_stream(writer, model)
    elif request.get("stream") is True:
        options = request.get("stream_options")
        usage = isinstance(options, dict) and bool(options.get("include_usage"))
        frames = (
            fu.anthropic_stream(model, CHUNKS)
            if anthropic
            else fu.openai_stream(model, CHUNKS, usage)
        )
        await fu._stream(writer, frames, 0)
    else:
        reply = (
            fu.anthropic_message(model, CHUNKS)
            if anthropic
            else fu.openai_completion(model, CHUNKS)
        )
        writer.write(fu._json_response(200, b"OK", reply))


def _handler(state: Upstream):
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            while True:
                path, headers, body = await _read(reader)
                seen = Seen(path, headers, body)
                state.requests.append(seen)
                await _answer(writer, seen, state.latency_s)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except ValueError:  # a malformed request line or length: drop the connection
            pass
        finally:
            writer.close()

    return connection


def bind(port: int = 0) -> socket.socket | None:
    """A listening socket on 127.0.0.1:``port``, or None when the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    sock.listen(1024)
    return sock


@contextmanager
def serving(sockets: list[socket.socket], latency_s: float = LATENCY_S) -> Iterator[Upstream]:
    """The upstream answering on ``sockets`` from a thread, until the block ends."""
    state = Upstream([s.getsockname()[1] for s in sockets], latency_s=latency_s)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> list[asyncio.Server]:
        return [await asyncio.start_server(_handler(state), sock=s, limit=2**26) for s in sockets]

    servers = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield state
    finally:

        async def stop() -> None:
            for server in servers:
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        for sock in sockets:
            sock.close()
