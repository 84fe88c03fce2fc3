"""A fast fake LLM upstream for benchmarks: OpenAI and Anthropic formats, streaming and not.

Raw asyncio on uvloop with a minimal HTTP/1.1 keep-alive loop (no framework), so that the
upstream is never the bottleneck of a benchmark. Every request waits ``--latency-ms`` and
then answers:

* ``POST /v1/messages`` — an Anthropic Messages response, or its SSE stream (``message_start``,
  ``--chunks`` text deltas ``--chunk-ms`` apart, ``message_delta`` with usage, ``message_stop``);
* ``POST /v1/chat/completions`` — an OpenAI Chat Completion, or its ``chat.completion.chunk``
  stream (a usage chunk when ``stream_options.include_usage``) ending in ``data: [DONE]``;
* anything else — 404.

The model field echoes the request's. Usage: ``input_tokens`` 12, one output token per chunk.
Run it alone (prints its URL)::

    .venv/bin/python bench/fake_upstream.py [--port 8900] [--latency-ms 50] [--chunks 20]
        [--chunk-ms 1]

or from another script: :func:`start_server` on a bound socket, or :func:`run` in a process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from dataclasses import dataclass
from typing import Any

import uvloop

INPUT_TOKENS = 12
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_JSON_HEAD = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"


@dataclass(frozen=True)
class Options:
    latency_s: float = 0.05
    chunks: int = 20
    chunk_interval_s: float = 0.001


# --- Anthropic Messages ------------------------------------------------------------------


def anthropic_message(model: str, chunks: int) -> dict[str, Any]:
    return {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "hello " * chunks}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": INPUT_TOKENS,
            "output_tokens": chunks,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _sse_event(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def anthropic_stream(model: str, chunks: int) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(head events, one delta per chunk, tail events) as SSE frames."""
    start = {**anthropic_message(model, chunks), "content": [], "stop_reason": None}
    start["usage"] = {**start["usage"], "output_tokens": 1}
    block = {"type": "text", "text": ""}
    head = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": block},
    ]
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}}
    deltas = [{**delta, "delta": {"type": "text_delta", "text": "hello "}}] * chunks
    final = {"stop_reason": "end_turn", "stop_sequence": None}
    tail = [
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": final, "usage": {"output_tokens": chunks}},
        {"type": "message_stop"},
    ]
    return (
        [_sse_event(e) for e in head],
        [_sse_event(e) for e in deltas],
        [_sse_event(e) for e in tail],
    )


# --- OpenAI Chat Completions -------------------------------------------------------------


def _openai_usage(chunks: int) -> dict[str, Any]:
    return {
        "prompt_tokens": INPUT_TOKENS,
        "completion_tokens": chunks,
        "total_tokens": INPUT_TOKENS + chunks,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def openai_completion(model: str, chunks: int) -> dict[str, Any]:
    message = {"role": "assistant", "content": "hello " * chunks, "refusal": None}
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_750_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        "usage": _openai_usage(chunks),
    }


def _data(payload: dict[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {text}\n\n".encode()


def openai_stream(
    model: str, chunks: int, include_usage: bool
) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(head chunks, one delta per chunk, tail chunks ending in ``[DONE]``) as SSE frames."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_750_000_000}
    base["model"] = model

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**base, "choices": [choice]}

    head = [_data(chunk({"role": "assistant", "content": ""}))]
    deltas = [_data(chunk({"content": "hello "}))] * chunks
    tail = [_data(chunk({}, "stop"))]
    if include_usage:
        tail.append(_data({**base, "choices": [], "usage": _openai_usage(chunks)}))
    tail.append(_data("[DONE]"))
    return head, deltas, tail


# --- the server --------------------------------------------------------------------------


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(request line, body) of the next request on a keep-alive connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return head.split(b"\r\n", 1)[0], body


def _json_response(status: int, reason: bytes, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    return _JSON_HEAD % (status, reason, len(body)) + body


async def _stream(
    writer: asyncio.StreamWriter, frames: tuple[list[bytes], list[bytes], list[bytes]], gap: float
) -> None:
    head, deltas, tail = frames
    writer.write(_SSE_HEAD + b"".join(b"%x\r\n%s\r\n" % (len(f), f) for f in head))
    for frame in deltas:
        if gap:
            await writer.drain()
            await asyncio.sleep(gap)
        writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
    writer.write(b"".join(b"%x\r\n%s\r\n" % (len(f), f) for f in tail) + b"0\r\n\r\n")


async def _answer(writer: asyncio.StreamWriter, line: bytes, body: bytes, options: Options) -> None:
    path = line.split(b" ")[1] if line.count(b" ") >= 2 else b""
    if path not in (b"/v1/messages", b"/v1/chat/completions"):
        writer.write(_json_response(404, b"Not Found", {"error": {"message": "not found"}}))
        return
    request = json.loads(body or b"{}")
    model, chunks = str(request.get("model", "bench-model")), options.chunks
    await asyncio.sleep(options.latency_s)
    anthropic = path == b"/v1/messages"
    if request.get("stream"):
        usage = bool((request.get("stream_options") or {}).get("include_usage"))
        frames = (
            anthropic_stream(model, chunks) if anthropic else openai_stream(model, chunks, usage)
        )
        await _stream(writer, frames, options.chunk_interval_s)
    else:
        reply = anthropic_message(model, chunks) if anthropic else openai_completion(model, chunks)
        writer.write(_json_response(200, b"OK", reply))


async def _connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, options: Options
) -> None:
    try:
        while True:
            line, body = await _read_request(reader)
            await _answer(writer, line, body, options)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def start_server(sock: socket.socket, options: Options) -> asyncio.Server:
    """Serve on ``sock`` (bound and listening) from the running loop."""
    return await asyncio.start_server(
        lambda r, w: _connection(r, w, options), sock=sock, backlog=4096
    )


def run(sock: socket.socket, options: Options) -> None:
    """Serve forever on uvloop (the target of a benchmark's upstream process)."""

    async def main() -> None:
        server = await start_server(sock, options)
        await server.serve_forever()

    uvloop.run(main())


def listening_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-ms", type=float, default=1.0)
    args = parser.parse_args()
    sock = listening_socket(args.port)
    print(f"fake upstream on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    run(sock, Options(args.latency_ms / 1000, args.chunks, args.chunk_ms / 1000))


if __name__ == "__main__":
    main()
