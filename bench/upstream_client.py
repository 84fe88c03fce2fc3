"""The upstream client's cost per request: the official SDKs vs the direct (aiohttp) path.

Issue 6. One fake upstream (bench/fake_upstream.py, its own process: fixed latency, SSE
chunks when streaming) and, in this process on uvloop, each provider as the gateway builds it
(``OpenAICompatProvider`` and ``AnthropicProvider``, ``http = "sdk"`` then ``"direct"``),
without the timeout and retry layers. For each format (openai, anthropic) x mode (complete,
stream) x path, after a warm-up: ``--requests`` sequential calls, then as many again
``--concurrency`` at a time. Printed per row: this process's CPU per request
(``time.process_time``, robust to other load on the machine), the wall p50 minus the
upstream's own latency (sequential, then concurrent), for streams the first event's p50;
then the SDK/direct ratios. Last, the RSS of a fresh process after its first request per
format and path (what a gateway worker carries). Usage::

    .venv/bin/python bench/upstream_client.py [--requests 300] [--concurrency 50]
        [--latency-ms 50] [--chunks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import uvloop
from processes import free_port, process

from tierwise.catalog import ModelSpec, load_catalog
from tierwise.messages import Request
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import Provider, ProviderConfig
from tierwise.providers.openai_compat import OpenAICompatProvider
from tierwise.providers.transport import HttpMode

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"openai": "openai:gpt-4.1-mini", "anthropic": "anthropic:claude-haiku-4-5"}
PATHS: tuple[HttpMode, ...] = ("sdk", "direct")
WARMUP = 30


@dataclass
class Row:
    kind: str
    mode: str
    path: str
    cpu_ms: float
    seq_p50_ms: float
    conc_p50_ms: float
    first_p50_ms: float | None


def _provider(kind: str, path: HttpMode, base: str) -> Provider:
    if kind == "openai":
        row = ProviderConfig(kind="openai", base_url=f"{base}/v1", http=path)
        return OpenAICompatProvider("openai", row, "sk-bench")
    return AnthropicProvider("anthropic", ProviderConfig(kind=kind, base_url=base, http=path), "k")


def _call(provider: Provider, model: ModelSpec, stream: bool) -> Callable[[], Awaitable[float]]:
    """One request; returns seconds to the first event (the whole call when not streaming)."""
    request = Request.from_prompt("Say hello in twenty short pieces.", max_tokens=64)

    async def once() -> float:
        start = time.perf_counter()
        if not stream:
            await provider.complete(request, model)
            return time.perf_counter() - start
        first = None
        async for _ in provider.stream(request, model):
            first = first or time.perf_counter() - start
        return first or 0.0

    return once


async def _timed(call: Callable[[], Awaitable[float]]) -> tuple[float, float]:
    start = time.perf_counter()
    first = await call()
    return time.perf_counter() - start, first


async def _measure(
    kind: str, path: HttpMode, stream: bool, base: str, args: argparse.Namespace
) -> Row:
    model = load_catalog().get(MODELS[kind])
    provider = _provider(kind, path, base)
    call = _call(provider, model, stream)
    for _ in range(WARMUP):
        await call()
    cpu = time.process_time()
    sequential = [await _timed(call) for _ in range(args.requests)]
    limit = asyncio.Semaphore(args.concurrency)

    async def bounded() -> tuple[float, float]:
        async with limit:
            return await _timed(call)

    concurrent = await asyncio.gather(*(bounded() for _ in range(args.requests)))
    cpu_ms = (time.process_time() - cpu) * 1000 / (2 * args.requests)
    await provider.aclose()
    latency = args.latency_ms
    first = statistics.median(f for _, f in sequential) * 1000 - latency if stream else None
    return Row(
        kind,
        "stream" if stream else "complete",
        path,
        cpu_ms,
        statistics.median(t for t, _ in sequential) * 1000 - latency,
        statistics.median(t for t, _ in concurrent) * 1000 - latency,
        first,
    )


def _print(rows: list[Row]) -> None:
    print(
        f"{'format':<10}{'mode':<9}{'path':<8}{'CPU ms/req':>11}{'seq p50+':>10}"
        f"{'conc p50+':>11}{'1st ev p50+':>13}"
    )
    for r in rows:
        first = f"{r.first_p50_ms:13.2f}" if r.first_p50_ms is not None else f"{'-':>13}"
        print(
            f"{r.kind:<10}{r.mode:<9}{r.path:<8}{r.cpu_ms:11.3f}{r.seq_p50_ms:10.2f}"
            f"{r.conc_p50_ms:11.2f}{first}"
        )
    print("\nratio sdk/direct (CPU per request; added wall p50 sequential, concurrent)")
    for sdk, direct in zip(rows[::2], rows[1::2], strict=True):
        print(
            f"{sdk.kind:<10}{sdk.mode:<9}CPU x{sdk.cpu_ms / direct.cpu_ms:5.2f}   "
            f"seq x{sdk.seq_p50_ms / max(direct.seq_p50_ms, 1e-3):5.2f}   "
            f"conc x{sdk.conc_p50_ms / max(direct.conc_p50_ms, 1e-3):5.2f}"
        )


# --- the HTTP libraries alone ---------------------------------------------------------------


async def _library_cpu_ms(library: str, base: str, args: argparse.Namespace) -> float:
    """CPU per bare POST + read of an OpenAI body with ``library`` (no provider, no SDK)."""
    import aiohttp  # noqa: PLC0415
    import httpx2  # noqa: PLC0415

    url, body = f"{base}/v1/chat/completions", {"model": "m", "messages": [], "max_tokens": 9}
    data = json.dumps(body).encode()
    headers = {"content-type": "application/json", "authorization": "Bearer k"}
    if library == "aiohttp":
        session = aiohttp.ClientSession()

        async def post() -> None:
            async with session.post(url, data=data, headers=headers) as response:
                await response.read()

        close: Callable[[], Awaitable[None]] = session.close
    else:
        client = httpx2.AsyncClient()

        async def post() -> None:
            (await client.post(url, content=data, headers=headers)).raise_for_status()

        close = client.aclose
    for _ in range(WARMUP):
        await post()
    cpu = time.process_time()
    for _ in range(args.requests):
        await post()
    limit = asyncio.Semaphore(args.concurrency)

    async def bounded() -> None:
        async with limit:
            await post()

    await asyncio.gather(*(bounded() for _ in range(args.requests)))
    await close()
    return (time.process_time() - cpu) * 1000 / (2 * args.requests)


# --- memory: a fresh process per path ------------------------------------------------------


def _rss_child(path: HttpMode, base: str) -> None:
    """Import the gateway, make one request per format on ``path``; print RSS and modules."""
    import tierwise.gateway.app  # noqa: F401, PLC0415 (what a worker has loaded)

    async def main() -> None:
        for kind, model_id in MODELS.items():
            provider = _provider(kind, path, base)
            await _call(provider, load_catalog().get(model_id), stream=False)()
            await provider.aclose()

    uvloop.run(main())
    rss = next(
        int(line.split()[1]) / 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    loaded = [m for m in ("openai", "anthropic", "httpx2", "aiohttp") if m in sys.modules]
    print(json.dumps({"rss_mb": rss, "loaded": loaded}))


def _rss(path: HttpMode, base: str) -> dict[str, object]:
    command = [sys.executable, __file__, "--rss-child", path, "--base", base]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _wait_listening(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the fake upstream did not listen on port {port}")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="sequential, then concurrent")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--rss-child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = _parse()
    if args.rss_child:
        _rss_child(args.rss_child, args.base)
        return
    port = free_port()
    script = str(ROOT / "bench" / "fake_upstream.py")
    upstream = [sys.executable, script, "--port", str(port), "--latency-ms", str(args.latency_ms)]
    upstream += ["--chunks", str(args.chunks), "--chunk-ms", "0"]
    with (
        tempfile.TemporaryDirectory() as tmp,
        process(upstream, dict(os.environ), Path(tmp) / "up.log"),
    ):
        _wait_listening(port)
        base = f"http://127.0.0.1:{port}"
        rows = [
            uvloop.run(_measure(kind, path, mode == "stream", base, args))
            for kind in MODELS
            for mode in ("complete", "stream")
            for path in PATHS
        ]
        print(
            f"{args.requests} sequential + {args.requests} concurrent ({args.concurrency} at a "
            f"time) per row; upstream latency {args.latency_ms:g} ms, {args.chunks} chunks; "
            "+ = minus that latency\n"
        )
        _print(rows)
        print("\nthe HTTP library alone (bare POST + read, non-streaming): CPU ms/request")
        for library in ("aiohttp", "httpx2"):
            print(f"  {library:<8}{uvloop.run(_library_cpu_ms(library, base, args)):7.3f}")
        print("\nRSS of a fresh process: gateway imported, one request per format")
        for path in PATHS:
            found = _rss(path, base)
            print(f"  {path:<7}{found['rss_mb']:7.1f} MB   modules loaded: {found['loaded']}")


if __name__ == "__main__":
    main()
