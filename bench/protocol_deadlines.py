"""What the slow-client deadlines (``tierwise.gateway.protocol``) cost on the hot path.

uvicorn's httptools protocol and the gateway's subclass with the header, body and send
deadlines serve the same requests from memory (a fake transport, a trivial ASGI app, uvloop
when installed, no sockets), alternately, in rounds: a kept-alive connection making requests
(each arriving in one read), and a new connection per request (the per-connection header
timer armed and cancelled). CPU per request is this thread's (``time.thread_time``).

    .venv/bin/python bench/protocol_deadlines.py [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from tierwise.gateway.config import GatewayConfig
from tierwise.gateway.protocol import timed_protocol

BODY = b'{"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}'  # noqa: E501
REQUEST = (
    b"POST /v1/messages HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
    b"x-api-key: tw_0123456789abcdef\r\nanthropic-version: 2023-06-01\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
ANSWER = b'{"ok": true}'


class _Transport(asyncio.Transport):
    """Takes what is written and drops it."""

    def __init__(self) -> None:
        super().__init__()
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def close(self) -> None:
        self._closing = True

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8787)}.get(
            name, default
        )


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"12")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


Factory = Callable[..., asyncio.Protocol]


async def _kept_alive(protocol: Factory, state: ServerState, config: Any, n: int) -> float:
    """CPU per request (µs) on one kept-alive connection."""
    conn: Any = protocol(config=config, server_state=state, app_state={})
    conn.connection_made(_Transport())
    started = time.thread_time()
    for _ in range(n):
        conn.data_received(REQUEST)
        await asyncio.gather(*state.tasks)
    spent = time.thread_time() - started
    conn.connection_lost(None)
    return spent / n * 1e6


async def _fresh(protocol: Factory, state: ServerState, config: Any, n: int) -> float:
    """CPU per request (µs), a new connection each."""
    started = time.thread_time()
    for _ in range(n):
        conn: Any = protocol(config=config, server_state=state, app_state={})
        conn.connection_made(_Transport())
        conn.data_received(REQUEST)
        await asyncio.gather(*state.tasks)
        conn.connection_lost(None)
    return (time.thread_time() - started) / n * 1e6


async def _run(requests: int, rounds: int) -> None:
    config = uvicorn.Config(_app, lifespan="off", log_level="warning")
    config.load()
    state = ServerState()
    kinds: dict[str, Factory] = {
        "uvicorn": HttpToolsProtocol,
        "deadlines": timed_protocol("httptools", GatewayConfig()),
    }
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for name, protocol in kinds.items():
            for way, measure in (("kept alive", _kept_alive), ("new connection", _fresh)):
                cpu = await measure(protocol, state, config, requests)
                results.setdefault((name, way), []).append(cpu)
    for way in ("kept alive", "new connection"):
        base = statistics.median(results[("uvicorn", way)])
        timed = statistics.median(results[("deadlines", way)])
        print(
            f"{way:15} uvicorn {base:6.2f} µs/request   with deadlines {timed:6.2f} µs/request"
            f"   added {timed - base:+5.2f} µs (median of {rounds} rounds of {requests})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    try:
        import uvloop  # noqa: PLC0415 (optional)

        runner: Any = uvloop.run
        loop_name = "uvloop"
    except ImportError:
        runner, loop_name = asyncio.run, "asyncio"
    print(f"event loop: {loop_name}")
    runner(_run(args.requests, args.rounds))


if __name__ == "__main__":
    main()
