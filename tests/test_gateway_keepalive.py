"""A stream that says nothing for a while gets ``: ping`` comments the SDKs skip.

A proxy or load balancer in front of the gateway cuts a connection idle for too long; an
emulated advisor's consult or a thinking model can be quiet longer than that. The gateway
sends an SSE comment line after every ``[gateway] stream_keepalive_s`` without an event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from starlette.types import Message

from tests.fakes import faults
from tests.gateway_harness import Served, gateway_settings
from tests.test_gateway_faults import (
    HELLO,
    _anthropic_events,
    _openai_events,
    _stream_text,
    faulty_gateway,
)
from tierwise.gateway.sse import PING, _KeepAlive

GAP_S = 0.2  # between upstream events: under the idle deadline (0.5 s), over the keep-alive


@contextmanager
def _gateway(tmp_path: Path, keepalive_s: float) -> Iterator[Served]:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    settings = gateway_settings(ledger, gateway={"stream_keepalive_s": keepalive_s})
    with faulty_gateway(settings) as served:
        yield served


def _anthropic_raw(gw: Served) -> bytes:
    client = gw.anthropic(timeout=10)
    with client.messages.with_streaming_response.create(
        model="claude-haiku-4-5", max_tokens=64, messages=HELLO, stream=True
    ) as response:
        return b"".join(response.iter_bytes())


def test_a_quiet_anthropic_stream_gets_pings_the_sdk_skips(tmp_path: Path) -> None:
    with _gateway(tmp_path, keepalive_s=0.05) as gw:
        for _ in range(2):
            gw.anthropic_fake.reply(faults.paced(_anthropic_events("kept alive"), gap=GAP_S))
        body = _anthropic_raw(gw)
        assert _stream_text(gw) == "kept alive"  # the SDK reads through the pings
    assert body.count(PING) >= 2
    assert body.rstrip().endswith(b'"type":"message_stop"}')  # pings never after the end


def test_a_quiet_openai_stream_gets_pings_the_sdk_skips(tmp_path: Path) -> None:
    with _gateway(tmp_path, keepalive_s=0.05) as gw:
        for _ in range(2):
            gw.openai_fake.reply(faults.paced(_openai_events("kept alive"), gap=GAP_S))
        client = gw.openai(timeout=10)
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4.1-mini", messages=HELLO, stream=True
        ) as response:
            body = b"".join(response.iter_bytes())
        chunks = client.chat.completions.create(model="gpt-4.1-mini", messages=HELLO, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "kept alive"
    assert body.count(PING) >= 2
    assert body.rstrip().endswith(b"data: [DONE]")


def test_no_pings_when_turned_off(tmp_path: Path) -> None:
    with _gateway(tmp_path, keepalive_s=0) as gw:
        gw.anthropic_fake.reply(faults.paced(_anthropic_events("quiet"), gap=GAP_S))
        body = _anthropic_raw(gw)
    assert PING not in body and b"message_stop" in body


async def test_a_ping_never_overlaps_a_chunk_and_never_follows_the_end() -> None:
    sent: list[bytes] = []
    sending = 0

    async def send(message: Message) -> None:
        nonlocal sending
        sending += 1
        assert sending == 1, "two sends at once"
        sent.append(message.get("body", b"<start>"))
        await asyncio.sleep(0.2 if message.get("body") == b"slow" else 0)
        sending -= 1

    alive = _KeepAlive(send, 0.03)
    await alive.send({"type": "http.response.start", "status": 200, "headers": []})
    await alive.send({"type": "http.response.body", "body": b"slow", "more_body": True})
    await asyncio.sleep(0.15)  # quiet now: pings
    await alive.send({"type": "http.response.body", "body": b"", "more_body": False})
    await asyncio.sleep(0.15)  # ended: none
    alive.stop()
    assert sent[:2] == [b"<start>", b"slow"] and sent[-1] == b""
    assert set(sent[2:-1]) == {PING}  # pinged while quiet, not while the slow chunk went out
