"""The gateway's own CPU per request and per streamed chunk, the upstream left out.

The real app (``create_app``: middlewares, routes, engine, budgets, trace, metrics, SQLite
ledger with write-behind) is called as an ASGI app, in process, with no server and no network:
its provider answers from memory at once (the same answer every time, 20 text chunks when
streaming). What is left is what tierwise's own layers cost — the figure issue 6's "CPU per
request" target is about once the upstream client (measured by ``bench/upstream_client.py``)
and the HTTP server are taken out. CPU is this thread's (``time.thread_time``), so other load
on the machine barely moves it; the ledger's writer thread is not counted.

    .venv/bin/python bench/gateway_layers.py [--requests 3000] [--concurrency 16] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tierwise.catalog import ModelSpec
from tierwise.config import load_settings
from tierwise.engine import Engine
from tierwise.gateway.app import create_app
from tierwise.messages import (
    BlockDelta,
    BlockStart,
    BlockStop,
    MessageDelta,
    MessageStart,
    MessageStop,
    Request,
    Response,
    StreamEvent,
    TextBlock,
    Usage,
)

MODEL = "gpt-4.1-mini"
ADMIN_KEY = "tw-bench-admin-key"
CHUNKS = 20


class MemoryProvider:
    """Answers at once from memory: a fixed response, or its stream of ``CHUNKS`` deltas."""

    name = "openai"

    async def complete(self, request: Request, model: ModelSpec) -> Response:
        usage = Usage(input_tokens=12, output_tokens=CHUNKS)
        text = TextBlock(text="hello " * CHUNKS)
        return Response(id="chatcmpl-1", model=model.id, content=[text], usage=usage)

    async def stream(self, request: Request, model: ModelSpec) -> AsyncIterator[StreamEvent]:
        yield MessageStart(message=Response(id="chatcmpl-1", model=model.id))
        yield BlockStart(index=0, block=TextBlock(text=""))
        for _ in range(CHUNKS):
            yield BlockDelta(index=0, delta={"type": "text_delta", "text": "hello "})
        yield BlockStop(index=0)
        yield MessageDelta(stop_reason="end_turn", usage=Usage(input_tokens=12, output_tokens=20))
        yield MessageStop()

    async def aclose(self) -> None:
        return None


class GcClock:
    """Counts the collector's passes and the time they take (all generations)."""

    def __init__(self) -> None:
        self.passes = [0, 0, 0]
        self.seconds = 0.0
        self.longest = 0.0
        self._start = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        took = time.perf_counter() - self._start
        self.passes[info["generation"]] += 1
        self.seconds += took
        self.longest = max(self.longest, took)

    def report(self, requests: int) -> str:
        per = self.seconds * 1000 / max(1, requests)
        passes = "/".join(map(str, self.passes))
        longest = self.longest * 1000
        return f"gc passes gen0/1/2 {passes}, {per:.3f} ms/request, longest {longest:.1f} ms"


def _scope(path: str, body: bytes) -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1"),
        (b"authorization", f"Bearer {ADMIN_KEY}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},  # as uvicorn says
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _one(app: Any, scope: dict[str, Any], body: bytes, marker: bytes) -> None:
    """One request through the app; raises unless it answered 200 and (streams) ended."""
    sent = False
    status = 0
    tail = b""
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()  # the client never hangs up
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, tail
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            tail = (tail + message.get("body", b""))[-64:]

    await app(dict(scope), receive, send)
    if status != 200 or marker not in tail:
        raise RuntimeError(f"answered {status}: {tail!r}")


async def _run(app: Any, stream: bool, requests: int, concurrency: int) -> float:
    """CPU milliseconds per request over ``requests``, ``concurrency`` at a time."""
    payload: dict[str, Any] = {"model": MODEL, "max_tokens": 64}
    payload["messages"] = [{"role": "user", "content": "Say hello."}]
    if stream:
        payload |= {"stream": True, "stream_options": {"include_usage": True}}
    body = json.dumps(payload).encode()
    scope = _scope("/v1/chat/completions", body)
    marker = b"[DONE]" if stream else b"}"
    queue = iter(range(requests))

    async def worker() -> None:
        for _ in queue:
            await _one(app, scope, body, marker)

    start = time.thread_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.thread_time() - start) * 1000 / requests


async def _main(args: argparse.Namespace, tmp: Path) -> None:
    os.environ["TIERWISE_ADMIN_KEY"] = ADMIN_KEY
    config = tmp / "tierwise.toml"
    gateway = "max_loop_lag_ms = 0\n" + ("gc_freeze = false\n" if args.no_gc_freeze else "")
    gateway += "" if args.gen0 is None else f"gc_gen0_threshold = {args.gen0}\n"
    config.write_text(f'default_policy = "fixed:openai:{MODEL}"\n[gateway]\n{gateway}')
    settings = load_settings(config, ledger_url=f"sqlite:///{tmp / 'ledger.db'}")
    engine = Engine(settings, providers={"openai": MemoryProvider()})
    app = create_app(settings, engine)
    profile = cProfile.Profile(time.thread_time) if args.profile else None
    async with app.router.lifespan_context(app):
        for stream in (False, True):
            await _run(app, stream, 200, args.concurrency)  # warm up
        for mode in args.modes.split(","):
            figures = []
            clock = GcClock()
            for _ in range(args.repeat):
                if profile:
                    profile.enable()
                figures.append(await _run(app, mode == "stream", args.requests, args.concurrency))
                if profile:
                    profile.disable()
            each = ", ".join(f"{f:.3f}" for f in figures)
            median = statistics.median(figures)
            print(f"{mode:8}  cpu {median:.3f} ms/request (median of {each})", flush=True)
            print(f"          {clock.report(args.requests * args.repeat)}", flush=True)
            gc.callbacks.remove(clock._on_gc)
    await engine.aclose()
    if profile:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per mode")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--modes", default="complete,stream")
    parser.add_argument("--no-gc-freeze", action="store_true", help="[gateway] gc_freeze = false")
    parser.add_argument("--gen0", type=int, default=None, help="[gateway] gc_gen0_threshold")
    parser.add_argument("--profile", action="store_true", help="cProfile (CPU time), then print")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    import uvloop  # noqa: PLC0415 (the gateway extra, as `tierwise serve` runs)

    with tempfile.TemporaryDirectory() as name:
        uvloop.run(_main(args, Path(name)))


if __name__ == "__main__":
    main()
