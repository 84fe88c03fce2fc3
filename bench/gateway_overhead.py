"""Gateway overhead under open-loop load: direct to a fake upstream vs through the gateway.

A minimal version of issue 6's measurement, side by side in one run on this machine:

* a fast fake Anthropic Messages upstream (raw asyncio + uvloop, its own process) with a
  fixed latency (default 50 ms) and, when streaming, 20 text chunks ``--chunk-ms`` apart;
* the gateway (``create_app`` under uvicorn with uvloop + httptools, its own process, auth on,
  SQLite ledger) with the real engine and Anthropic provider pointed at that upstream;
* an open-loop load generator (requests start on a fixed schedule, latency measured from the
  scheduled start, so a slow server cannot slow the load down).

It prints latency p50/p95/p99 direct and through the gateway, the added latency (the
difference), the success rate, and the gateway's CPU time per request and peak RSS, for
non-streaming (full response) and streaming (time to first byte and to the last) at each
rate. Usage::

    .venv/bin/python bench/gateway_overhead.py [--duration 10] [--rates 50,200]
        [--latency-ms 50] [--chunk-ms 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import uvloop

ADMIN_KEY = "tw-bench-admin-key"
MODEL = "claude-haiku-4-5"
CHUNKS = 20
PROMPT = {"role": "user", "content": "Say hello in twenty short pieces."}


# --- the fake upstream ------------------------------------------------------------------


_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
_JSON_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"


def _message() -> dict:
    return {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "hello " * CHUNKS}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": CHUNKS, "cache_read_input_tokens": 0},
    }


def _sse(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _stream_events() -> list[bytes]:
    start = {**_message(), "content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": 12, "output_tokens": 1}
    events = [{"type": "message_start", "message": start}]
    events.append(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    )
    delta = {"type": "text_delta", "text": "hello "}
    events += [{"type": "content_block_delta", "index": 0, "delta": delta}] * CHUNKS
    events.append({"type": "content_block_stop", "index": 0})
    final = {"stop_reason": "end_turn", "stop_sequence": None}
    events.append({"type": "message_delta", "delta": final, "usage": {"output_tokens": CHUNKS}})
    events.append({"type": "message_stop"})
    return [_sse(e) for e in events]


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, latency: float, chunk: float
) -> None:
    body_json = json.dumps(_message()).encode()
    events = _stream_events()
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            await asyncio.sleep(latency)
            if b'"stream":true' in body.replace(b" ", b""):
                writer.write(_SSE_HEAD)
                for event in events:
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    if chunk:
                        await writer.drain()
                        await asyncio.sleep(chunk)
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(_JSON_HEAD % len(body_json) + body_json)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def _run_upstream(sock: socket.socket, latency: float, chunk: float) -> None:
    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: _handle(r, w, latency, chunk), sock=sock, backlog=4096
        )
        await server.serve_forever()

    uvloop.run(main())


# --- the gateway ------------------------------------------------------------------------


def _run_gateway(sock: socket.socket, upstream: str, ledger_url: str) -> None:
    import uvicorn  # noqa: PLC0415

    from tierwise.config import load_settings  # noqa: PLC0415
    from tierwise.gateway.app import create_app  # noqa: PLC0415

    provider = {"base_url": upstream, "api_key": "sk-bench", "max_retries": 0}
    settings = load_settings(
        None, ledger_url=ledger_url, admin_key=ADMIN_KEY, providers={"anthropic": provider}
    )
    config = uvicorn.Config(
        create_app(settings), log_level="warning", access_log=False, backlog=4096
    )
    uvicorn.Server(config).run(sockets=[sock])


def _listening() -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- the load generator -----------------------------------------------------------------


@dataclass
class Run:
    total_ms: list[float] = field(default_factory=list)
    first_byte_ms: list[float] = field(default_factory=list)
    sent: int = 0
    ok: int = 0


async def _one(
    client: httpx2.AsyncClient, url: str, headers: dict, body: dict, due: float, run: Run
) -> None:
    await asyncio.sleep(max(0.0, due - time.perf_counter()))
    first = None
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            data = b""
            async for piece in response.aiter_bytes():
                first = first or time.perf_counter()
                data += piece
        good = response.status_code == 200 and (b"message_stop" in data or not body.get("stream"))
    except httpx2.HTTPError:
        good = False
    if good:
        run.ok += 1
        run.total_ms.append((time.perf_counter() - due) * 1000)
        run.first_byte_ms.append(((first or time.perf_counter()) - due) * 1000)


async def _load(url: str, headers: dict, stream: bool, rate: int, duration: float) -> Run:
    body = {"model": MODEL, "max_tokens": 64, "messages": [PROMPT], "stream": stream}
    limits = httpx2.Limits(max_connections=2000, max_keepalive_connections=2000)
    run = Run()
    async with httpx2.AsyncClient(timeout=30, limits=limits) as client:
        start = time.perf_counter() + 0.2
        count = int(rate * duration)
        run.sent = count
        await asyncio.gather(
            *(_one(client, url, headers, body, start + i / rate, run) for i in range(count))
        )
    return run


def _pcts(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return (float("nan"),) * 3
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


def _fmt(p: tuple[float, float, float]) -> str:
    return "/".join(f"{v:6.1f}" for v in p)


def _report(label: str, direct: list[float], through: list[float]) -> str:
    d, g = _pcts(direct), _pcts(through)
    added = tuple(b - a for a, b in zip(d, g, strict=True))
    return f"{label:<10} direct {_fmt(d)}  gateway {_fmt(g)}  added {_fmt(added)}"


async def _bench(args: argparse.Namespace, upstream: str, gateway: str, gateway_pid: int) -> None:
    messages = "/v1/messages"
    direct_headers = {"x-api-key": "sk-bench", "anthropic-version": "2023-06-01"}
    gw_headers = {"x-api-key": ADMIN_KEY, "anthropic-version": "2023-06-01"}
    await _load(gateway + messages, gw_headers, False, 20, 1)  # warm up the gateway
    print(
        f"upstream latency {args.latency_ms} ms, {CHUNKS} chunks {args.chunk_ms} ms apart "
        f"when streaming; {args.duration:.0f} s per row; latencies in ms as p50/p95/p99"
    )
    for stream in (False, True):
        for rate in args.rates:
            direct = await _load(upstream + messages, direct_headers, stream, rate, args.duration)
            cpu = _cpu_seconds(gateway_pid)
            through = await _load(gateway + messages, gw_headers, stream, rate, args.duration)
            cpu_ms = (_cpu_seconds(gateway_pid) - cpu) * 1000 / max(1, through.sent)
            mode = "stream" if stream else "complete"
            print(
                f"\n{mode} @ {rate} RPS: success direct {direct.ok / direct.sent:.2%}, "
                f"gateway {through.ok / through.sent:.2%}; gateway CPU {cpu_ms:.2f} ms/request, "
                f"peak RSS {_peak_rss_mb(gateway_pid):.0f} MB"
            )
            if stream:
                print(_report("first byte", direct.first_byte_ms, through.first_byte_ms))
            print(_report("full", direct.total_ms, through.total_ms))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per row (issue 6: 60)"
    )
    parser.add_argument("--rates", type=lambda s: [int(r) for r in s.split(",")], default=[50, 200])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--chunk-ms", type=float, default=1.0)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    up_sock, upstream = _listening()
    gw_sock, gateway = _listening()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = f"sqlite:///{tmp}/bench.db"
        up = context.Process(
            target=_run_upstream,
            args=(up_sock, args.latency_ms / 1000, args.chunk_ms / 1000),
            daemon=True,
        )
        gw = context.Process(target=_run_gateway, args=(gw_sock, upstream, ledger), daemon=True)
        up.start()
        gw.start()
        try:
            _wait_ready(gateway)
            uvloop.run(_bench(args, upstream, gateway, gw.pid or 0))
        finally:
            gw.terminate()
            up.terminate()
            gw.join(10)
            up.join(10)


def _wait_ready(gateway: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx2.get(gateway + "/readyz", timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the gateway did not become ready")


if __name__ == "__main__":
    main()
