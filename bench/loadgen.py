"""An open-loop HTTP/1.1 load generator on raw asyncio (uvloop): cheap enough not to be the
bottleneck, which its direct-to-upstream figures show.

Requests start on a fixed schedule (``rate`` per second for ``duration`` seconds) whatever
the server does; latency counts from the scheduled start, so a slow server cannot slow the
load down (no coordinated omission). Keep-alive connections are reused; a new one is opened
when none is idle. Each result records the status, the time to the first body byte and to
the last, whether ``retry-after`` came with it, and what went wrong otherwise (connection
reset / refused, timeout, a stream that ended without its final marker).
"""

from __future__ import annotations

import asyncio
import errno
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import uvloop


@dataclass(frozen=True)
class LoadSpec:
    host: str
    port: int
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    rate: float
    duration: float
    timeout: float = 30.0
    done_marker: bytes = b""
    """For a stream: the bytes that end a complete answer (``[DONE]``, ``message_stop``)."""


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    total_ms: list[float] = field(default_factory=list)
    first_byte_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    retry_after: int = 0
    """Refusals (429/503) that carried ``retry-after``."""
    wall_s: float = 0.0


class _Broken(Exception):
    """The response could not be read to its end."""


class _Stale(Exception):
    """A reused keep-alive connection was closed before any byte of the response."""


class _Connection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reused: bool
    ) -> None:
        self.reader, self.writer = reader, writer
        self.reused = reused
        """Kept alive from an earlier request (the server may have closed it meanwhile)."""

    def close(self) -> None:
        self.writer.close()


class _Client:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.idle: list[_Connection] = []
        body = json.dumps(spec.body).encode()
        head = [f"POST {spec.path} HTTP/1.1", f"host: {spec.host}:{spec.port}"]
        head += [f"{k}: {v}" for k, v in spec.headers.items()]
        head += ["content-type: application/json", f"content-length: {len(body)}"]
        self.request = ("\r\n".join(head) + "\r\n\r\n").encode() + body

    async def connection(self, fresh: bool = False) -> _Connection:
        if self.idle and not fresh:
            return self.idle.pop()
        reader, writer = await asyncio.open_connection(self.spec.host, self.spec.port, limit=2**20)
        return _Connection(reader, writer, reused=False)

    async def one(self, due: float, result: LoadResult) -> None:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        conn: _Connection | None = None
        try:
            conn = await self.connection()
            try:
                outcome = await asyncio.wait_for(self._exchange(conn, due), self.spec.timeout)
            except _Stale:  # the server closed an idle keep-alive connection: retry once
                conn.close()
                conn = await self.connection(fresh=True)
                outcome = await asyncio.wait_for(self._exchange(conn, due), self.spec.timeout)
        except TimeoutError:
            outcome = ("timeout", None, None, False, False)
        except (ConnectionError, OSError, _Broken, asyncio.IncompleteReadError) as exc:
            outcome = (_failure_kind(exc), None, None, False, False)
        kind, first, last, retry_after, keep = outcome
        result.statuses[kind] += 1
        result.retry_after += retry_after
        if kind == "200" and first is not None and last is not None:
            result.ok += 1
            result.first_byte_ms.append((first - due) * 1000)
            result.total_ms.append((last - due) * 1000)
        if conn is not None and keep:
            conn.reused = True
            self.idle.append(conn)
        elif conn is not None:
            conn.close()

    async def _exchange(
        self, conn: _Connection, due: float
    ) -> tuple[str, float | None, float | None, bool, bool]:
        conn.writer.write(self.request)
        try:
            head = await conn.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if conn.reused and not getattr(exc, "partial", b""):
                raise _Stale from exc
            raise
        status, headers = _parse_head(head)
        if "content-length" in headers:
            first = time.perf_counter()
            body = await conn.reader.readexactly(int(headers["content-length"]))
        else:
            first, body = await _read_chunked(conn.reader)
        last = time.perf_counter()
        keep = headers.get("connection", "").lower() != "close"
        kind = str(status)
        if status == 200 and self.spec.done_marker and self.spec.done_marker not in body:
            kind = "200-truncated"
        elif status == 200 and self.spec.done_marker and b'"error"' in body:
            kind = "200-error-event"
        return kind, first, last, "retry-after" in headers, keep


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_chunked(reader: asyncio.StreamReader) -> tuple[float, bytes]:
    parts: list[bytes] = []
    first: float | None = None
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return first or time.perf_counter(), b"".join(parts)
        first = first or time.perf_counter()
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise _Broken("bad chunk framing")


async def _run(spec: LoadSpec) -> LoadResult:
    client = _Client(spec)
    result = LoadResult(sent=int(spec.rate * spec.duration))
    start = time.perf_counter() + 0.2
    tasks = [client.one(start + i / spec.rate, result) for i in range(result.sent)]
    await asyncio.gather(*tasks)
    result.wall_s = time.perf_counter() - start
    for conn in client.idle:
        conn.close()
    return result


def run_load(spec: LoadSpec) -> LoadResult:
    """Run one open-loop load (call it in its own process)."""
    return uvloop.run(_run(spec))


def _failure_kind(exc: BaseException) -> str:
    """How a request failed, for the tally: the exception's type, and for a bare OSError its
    errno's name too (``OSError EMFILE`` is this generator out of descriptors, not the
    server's doing)."""
    name = type(exc).__name__
    code = getattr(exc, "errno", None)
    if type(exc) is OSError and isinstance(code, int):
        return f"{name} {errno.errorcode.get(code, code)}"
    return name
