"""Fault scorecard: the gateway's fault scenarios against a running ``tierwise serve``.

Fake Anthropic and OpenAI upstreams (the test fakes, speaking the real wire formats) run on
127.0.0.1 in this process and misbehave on cue; ``tierwise serve`` runs as its own process
configured against them (first-token and idle timeouts of 1 s, no retries, Haiku falling
back to GPT-4.1 mini); the official SDKs call it. Each scenario ends in

* ``pass`` — the right answer (possibly served by the fallback, accounted exactly),
* ``honest error`` — an HTTP error status before the first byte, or an in-band error event
  after it, which the SDK raises,
* ``fail`` — anything else: a hang past its deadline, a truncated answer returned as a
  success, a wrong status or a ledger that does not add up.

Usage (exit status 1 when any scenario fails)::

    .venv/bin/python bench/fault_scorecard.py [--smoke]

``--smoke`` leaves out the scenarios that wait on a timeout (silent upstream, stall).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anthropic
import httpx2
import openai
from processes import free_port
from tests.fakes import anthropic_upstream as afx
from tests.fakes import faults
from tests.fakes import openai_upstream as ofx
from tests.fakes.loopback import serve

from tierwise.ledger.store import Ledger

PRIMARY, FALLBACK = "anthropic:claude-haiku-4-5", "openai:gpt-4.1-mini"
LONE = "anthropic:claude-sonnet-4-6"  # no fallback: its failures reach the client
FALLBACK_COST = Decimal("0.0000236")  # GPT-4.1 mini: 19 in * $0.40 + 10 out * $1.60 per M
HELLO: Any = [{"role": "user", "content": "Hello"}]
CLIENT_TIMEOUT_S = 15


@dataclass
class Upstreams:
    anthropic: afx.FakeAnthropic
    openai: ofx.FakeOpenAI


@dataclass(frozen=True)
class Gateway:
    url: str
    ledger_url: str

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.url, api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT_S
        )

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT_S
        )


class Fail(Exception):
    """The scenario's outcome is wrong (not merely an error)."""


Scenario = Callable[[Upstreams, Gateway], str]
"""Runs one scenario; returns ``pass`` or ``honest error`` with a detail, raises Fail."""


# --- the gateway process ------------------------------------------------------------------


def _config(folder: Path, urls: tuple[str, str], port: int, threshold: int) -> Path:
    ledger_url = f"sqlite:///{folder / 'ledger.db'}"
    timeouts = "first_token_timeout_s = 1.0\nidle_timeout_s = 1.0\nmax_retries = 0"
    text = f"""
ledger_url = "{ledger_url}"
[gateway]
port = {port}
auth = false
drain_s = 2
[failover]
failure_threshold = {threshold}
cooldown_s = 60
[failover.fallbacks]
"{PRIMARY}" = ["{FALLBACK}"]
[providers.anthropic]
base_url = "{urls[0]}"
api_key = "sk-ant-fake"
{timeouts}
[providers.openai]
base_url = "{urls[1]}/v1"
api_key = "sk-openai-fake"
{timeouts}
"""
    path = folder / "config.toml"
    path.write_text(text, "utf-8")
    return path


@contextmanager
def gateway(
    folder: Path, up: Upstreams, urls: tuple[str, str], threshold: int
) -> Iterator[Gateway]:
    """``tierwise serve`` in its own process, until the block ends (then SIGTERM)."""
    port = free_port()
    config = _config(folder, urls, port, threshold)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    command = [sys.executable, "-m", "tierwise", "--config", str(config), "serve"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    served = Gateway(f"http://127.0.0.1:{port}", f"sqlite:///{folder / 'ledger.db'}")
    try:
        _wait_ready(served.url, process)
        _warm_up(served, up)
        yield served
    finally:
        process.terminate()
        process.wait(30)


def _warm_up(gw: Gateway, up: Upstreams) -> None:
    """One plain request first, so no scenario's time includes the gateway's first call."""
    up.anthropic.reply_message(afx.text_message("warm"))
    _ask(gw, LONE)


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    with httpx2.Client(base_url=url, timeout=2) as http:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if http.get("/readyz").status_code == 200:
                    return
            except httpx2.TransportError:
                time.sleep(0.1)
    raise SystemExit("tierwise serve did not start")


# --- scenario helpers ---------------------------------------------------------------------


def _anthropic_events(text: str) -> list[bytes]:
    return faults.split_events(afx.sse_body(afx.stream_events(afx.text_message(text))))


def _openai_events(text: str) -> list[bytes]:
    return faults.split_events(ofx.sse_body(ofx.stream_chunks(ofx.completion(text))))


def _ask(gw: Gateway, model: str = PRIMARY) -> Any:
    return gw.anthropic().messages.with_raw_response.create(
        model=model, max_tokens=64, messages=HELLO
    )


def _text(raw: Any) -> str:
    return "".join(b.text for b in raw.parse().content if b.type == "text")


def _expect_text(raw: Any, text: str) -> str:
    if _text(raw) != text:
        raise Fail(f"wrong answer {_text(raw)!r}")
    return f"pass: {raw.headers.get('x-tierwise-model')}"


def _expect_status(call: Callable[[], Any], status: int) -> str:
    try:
        call()
    except (anthropic.APIStatusError, openai.APIStatusError) as exc:
        if exc.status_code != status:
            raise Fail(f"status {exc.status_code}, expected {status}") from None
        after = exc.response.headers.get("retry-after")
        return f"honest error: {status}" + (f" retry-after {after}" if after else "")
    raise Fail("succeeded where the upstream failed")


def _stream_anthropic(gw: Gateway, model: str = LONE) -> str:
    with gw.anthropic().messages.stream(model=model, max_tokens=64, messages=HELLO) as stream:
        return "".join(stream.text_stream)


def _stream_openai(gw: Gateway) -> str:
    chunks = gw.openai().chat.completions.create(model=FALLBACK, messages=HELLO, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _expect_in_band(stream: Callable[[], str]) -> str:
    try:
        text = stream()
    except (anthropic.APITimeoutError, openai.APITimeoutError):
        raise Fail("the client timed out: a hang") from None
    except (anthropic.APIError, openai.APIError) as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        message = str(body.get("error", body).get("message", exc.message))
        return f"honest error: in-band ({message[:70]})"
    raise Fail(f"a truncated stream ended like a success: {text!r}")


def _task_calls(gw: Gateway, task_id: str, count: int) -> list[Any]:
    deadline = time.monotonic() + 5
    while True:
        with Ledger.open(gw.ledger_url) as ledger:
            calls = ledger.calls(task_id)
        if len(calls) >= count or time.monotonic() > deadline:
            return calls
        time.sleep(0.05)


# --- the scenarios --------------------------------------------------------------------------


def rate_limited_with_retry_after(up: Upstreams, gw: Gateway) -> str:
    up.anthropic.reply_error(429, "rate_limit_error", "slow down", headers={"retry-after": "7"})
    return _expect_status(lambda: _ask(gw, LONE), 429)


def rate_limited_without_retry_after(up: Upstreams, gw: Gateway) -> str:
    up.anthropic.reply_error(429, "rate_limit_error", "slow down")
    up.openai.reply_completion(ofx.completion("served by the fallback"))
    return _expect_text(_ask(gw), "served by the fallback")


def server_error(up: Upstreams, gw: Gateway) -> str:
    up.anthropic.reply_error(500, "api_error", "Internal server error")
    return _expect_status(lambda: _ask(gw, LONE), 502)


def tcp_reset(up: Upstreams, gw: Gateway) -> str:
    up.anthropic.reply(faults.reset())
    up.openai.reply_completion(ofx.completion("after a reset"))
    return _expect_text(_ask(gw), "after a reset")


def silent_upstream(up: Upstreams, gw: Gateway) -> str:
    up.anthropic.reply(faults.silent(10))
    return _expect_status(lambda: _ask(gw, LONE), 504)


def slow_first_token(up: Upstreams, gw: Gateway) -> str:
    up.anthropic.reply(faults.paced(_anthropic_events("worth the wait"), first_delay=0.6))
    text = _stream_anthropic(gw)
    if text != "worth the wait":
        raise Fail(f"wrong answer {text!r}")
    return "pass: within the first-token deadline"


def stream_cut(up: Upstreams, gw: Gateway) -> str:
    up.anthropic.reply(faults.paced(_anthropic_events("cut off midway")[:5], ending="cut"))
    return _expect_in_band(lambda: _stream_anthropic(gw))


def stream_stall(up: Upstreams, gw: Gateway) -> str:
    up.openai.reply(faults.paced(_openai_events("stalls")[:3], ending="stall", stall_s=10))
    return _expect_in_band(lambda: _stream_openai(gw))


def malformed_chunk(up: Upstreams, gw: Gateway) -> str:
    events = _openai_events("malformed")
    up.openai.reply(faults.paced([*events[:2], b"data: {oops\n\n", *events[2:]]))
    return _expect_in_band(lambda: _stream_openai(gw))


def missing_done(up: Upstreams, gw: Gateway) -> str:
    up.openai.reply(faults.paced(_openai_events("no done")[:-1]))
    return _expect_in_band(lambda: _stream_openai(gw))


def context_length(up: Upstreams, gw: Gateway) -> str:
    up.anthropic.reply_error(400, "invalid_request_error", "prompt is too long: 210000 tokens")
    before = len(up.openai.requests)
    outcome = _expect_status(lambda: _ask(gw), 400)
    if len(up.openai.requests) != before:
        raise Fail("failed over on a request no model can serve")
    return outcome


def content_filter(up: Upstreams, gw: Gateway) -> str:
    up.openai.reply_completion(ofx.completion("", finish_reason="content_filter"))
    reply = gw.openai().chat.completions.create(model=FALLBACK, messages=HELLO)
    if reply.choices[0].finish_reason != "content_filter":
        raise Fail(f"finish_reason {reply.choices[0].finish_reason!r}")
    return "pass: finish_reason content_filter relayed"


def failover_accounting(up: Upstreams, gw: Gateway) -> str:
    up.anthropic.reply_error(503, "api_error", "unavailable")
    up.openai.reply_completion(ofx.completion("accounted"))
    raw = _ask(gw)
    _expect_text(raw, "accounted")
    failed, served = _task_calls(gw, raw.headers["x-tierwise-task-id"], 2)[:2]
    if (failed.status, failed.cost_usd, served.model) != ("error", Decimal(0), FALLBACK):
        raise Fail(f"ledger: {failed.status} {failed.cost_usd} then {served.model}")
    if served.cost_usd != FALLBACK_COST or raw.headers["x-tierwise-cost-usd"] != str(FALLBACK_COST):
        raise Fail(f"cost {served.cost_usd}, expected {FALLBACK_COST}")
    return f"pass: failed call $0 + fallback ${served.cost_usd}"


def flapping_primary(up: Upstreams, gw: Gateway) -> str:
    """On a gateway whose circuits open after 2 failures."""
    for _ in range(2):
        up.anthropic.reply_error(529, "overloaded_error", "Overloaded")
        up.openai.reply_completion(ofx.completion("fallback"))
        _expect_text(_ask(gw), "fallback")
    before = len(up.anthropic.requests)
    up.openai.reply_completion(ofx.completion("fallback"))
    _expect_text(_ask(gw), "fallback")
    if len(up.anthropic.requests) != before:
        raise Fail("the open circuit still let the primary be called")
    with httpx2.Client(base_url=gw.url, timeout=5) as http:
        state = http.get("/readyz").json()["circuits"].get(PRIMARY)
    if state != "open":
        raise Fail(f"circuit {state!r}, expected open")
    return "pass: circuit open, fallback served"


SCENARIOS: list[tuple[str, Scenario, bool]] = [
    ("429 with retry-after", rate_limited_with_retry_after, True),
    ("429 without retry-after", rate_limited_without_retry_after, True),
    ("5xx", server_error, True),
    ("TCP reset", tcp_reset, True),
    ("silent upstream", silent_upstream, False),
    ("slow first token", slow_first_token, True),
    ("stream cut", stream_cut, True),
    ("stalled stream", stream_stall, False),
    ("malformed chunk", malformed_chunk, True),
    ("no [DONE]", missing_done, True),
    ("context-length error", context_length, True),
    ("content-filter refusal", content_filter, True),
    ("failover accounting", failover_accounting, True),
]
"""(name, scenario, in the smoke run); the flapping primary runs on its own gateway."""


def run_one(name: str, scenario: Scenario, up: Upstreams, gw: Gateway) -> tuple[str, str, float]:
    start = time.perf_counter()
    try:
        detail = scenario(up, gw)
        verdict = detail.split(":")[0]
    except Fail as exc:
        verdict, detail = "fail", str(exc)
    except Exception as exc:
        verdict, detail = "fail", f"{type(exc).__name__}: {exc}"
    return verdict, detail, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="skip the timeout scenarios")
    args = parser.parse_args()
    up = Upstreams(afx.FakeAnthropic(), ofx.FakeOpenAI())
    rows: list[tuple[str, str, str, float]] = []
    with ExitStack() as stack:
        stack.callback(faults.RELEASE.set)
        anthropic_url = stack.enter_context(serve(up.anthropic.handler))
        urls = (anthropic_url, stack.enter_context(serve(up.openai.handler)))
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        (folder / "a").mkdir()
        (folder / "b").mkdir()
        with gateway(folder / "a", up, urls, threshold=1000) as gw:
            for name, scenario, smoke in SCENARIOS:
                if smoke or not args.smoke:
                    rows.append((name, *run_one(name, scenario, up, gw)))
        with gateway(folder / "b", up, urls, threshold=2) as gw:
            rows.append(("flapping primary", *run_one("flapping", flapping_primary, up, gw)))
    print(f"{'scenario':<26} {'outcome':<13} {'time':>8}  detail")
    for name, verdict, detail, seconds in rows:
        print(f"{name:<26} {verdict:<13} {seconds:>7.2f}s  {detail}")
    failed = sum(verdict == "fail" for _, verdict, _, _ in rows)
    print(f"\n{len(rows) - failed}/{len(rows)} scenarios passed or failed honestly")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
