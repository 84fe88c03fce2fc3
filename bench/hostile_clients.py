"""Hostile clients against a live ``tierwise serve``: one count per defect class of issue 13.

Every class starts its own ``tierwise serve`` (a subprocess, temp config, ledger and XDG
dirs) against a loopback fake upstream (bench/hostile_upstream.py, in this process: it
counts what the gateway forwards, echoes the provider key on cue, fails Haiku on cue), acts
as a hostile client would (raw httpx2, the way the SDKs speak) and prints one line per
count, ``name: value (tried N)``. Every count must read 0 once issue 13 is fixed (RSS
growth: at most the body limit). It is a measurement, not a test: the exit status is 0
whatever the counts; the summary names those that are not 0.

Classes (``--only a,b``): ``commands`` (executable / filesystem policy parts named from the
wire: marker files that appear, probe files read), ``budgets`` (overshoot in requests and
dollars with negative and 10**30 ``max_tokens``, SQLite and Redis), ``allowlist`` (a
``*haiku*`` key reaching other models), ``input`` (a corpus of malformed bodies, headers
and query strings on both APIs: 5xx, invalid ones forwarded and answered 200), ``secrets``
(provider keys echoed by the upstream, database URLs and driver errors in 503s),
``reach`` (connections to 127.0.0.1:11434/8000/8080 nobody configured), ``dashboard``
(X-Forwarded-For rotation, unthrottled Bearer guesses, a cookie valid after logout),
``idempotency`` (over-long keys ignored, replays after revocation), ``slowclients``
(slots held by streams nobody reads, idle and slow connections left open), ``uploads``
(RSS growth under unauthenticated 30 MB uploads) and ``kill9`` (answered requests lost
after ``kill -9`` at 50 and 200 RPS; bench/kill9.py's ``kill9_loss`` when present).

Settings of the fixed code (``[gateway] header_timeout_s`` …, ``keys create
--inline-policies``) are used only when the installed tierwise has them, so the same script
measures before and after. Loopback only; every process it starts is stopped. Usage::

    .venv/bin/python bench/hostile_clients.py [--only input,dashboard] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hostile_upstream as hu
import httpx2
import psycopg
import redis
import tcp_proxy
from hostile_corpus import corpus, in_envelope
from hostile_harness import (
    ADMIN_KEY,
    CHAT,
    COUNT,
    HAIKU,
    MESSAGES,
    MINI,
    OPUS,
    PROVIDER_KEYS,
    Bench,
    Count,
    Live,
    auth,
    chat,
    message,
    post,
    rss_mb,
    toml_table,
)
from psycopg import sql

from tierwise.catalog import load_catalog
from tierwise.gateway.config import GatewayConfig

DB_PASSWORD = "bench-db-pw-" + secrets.token_hex(8)
POSTGRES = ("127.0.0.1", 5432)
REDIS_URL = "redis://127.0.0.1:6379/0"
WANTED_TIMEOUTS = {
    "header_timeout_s": 2.0,
    "keepalive_timeout_s": 2.0,
    "body_timeout_s": 2.0,
    "stream_send_timeout_s": 2.0,
}
"""The slow-client timeouts the bench sets (issue 13 §5) where the installed tierwise has them."""
SLOW_WAIT_S = 6.0
"""How long slow and idle clients wait before the bench looks (past every timeout above and
uvicorn's own 5 s keep-alive)."""


# --- commands: executable and filesystem policy parts from the wire -------------------------


def _watched(path: Path, text: str) -> Path:
    """A file whose next read shows in its atime (relatime: atime older than mtime)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    st = path.stat()
    os.utime(path, (st.st_mtime - 1000, st.st_mtime))
    return path


def _was_read(path: Path) -> bool:
    st = path.stat()
    return st.st_atime >= st.st_mtime


@dataclass
class Probe:
    label: str
    path: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    key: str = "plain"


def _command_probes(b: Bench, marks: Path, keys: list[str]) -> tuple[list[Probe], list[Path]]:
    """Probes that each name a ``command:touch <marker>`` gate somewhere; their markers."""
    probes: list[Probe] = []
    markers: list[Path] = []

    def touch(tier: str = MINI, before: str = "") -> str:
        markers.append(marks / f"m{len(markers)}")
        return f"tierwise/cascade:{tier}?gates={before}command:touch {markers[-1]}"

    for key in keys:
        tag = " [auth = false]" if key == "no-auth" else f" [{key} key]"
        probes.append(Probe("model field, chat" + tag, CHAT, chat(touch()), key=key))
        probes.append(
            Probe("model field, messages" + tag, MESSAGES, message(touch(HAIKU)), key=key)
        )
    add = probes.append
    add(Probe("model field, chat stream", CHAT, chat(touch(), stream=True)))
    add(Probe("model field, messages stream", MESSAGES, message(touch(HAIKU), stream=True)))
    add(Probe("model field, count_tokens", COUNT, message(touch(HAIKU))))
    add(Probe("second gate", CHAT, chat(touch(before="regex:hello,"))))
    builtin = touch().replace(f"cascade:{MINI}?", "cascade?")
    add(Probe("built-in cascade", CHAT, chat(builtin)))
    shell = touch().replace("command:touch ", "command:sh -c 'touch ") + "'"
    add(Probe("sh -c", CHAT, chat(shell)))
    ws = b.tmp / "commands" / "ws-cmd"
    _watched(ws / "secret.txt", "operator data")
    add(Probe("workspace=", CHAT, chat(touch() + f"&workspace={ws}")))
    for header in ("x-tierwise-policy", "x-tierwise-model", "tierwise-policy"):
        add(Probe(f"{header} header, chat", CHAT, chat("gpt-4.1-mini"), {header: touch()}))
        body = message("claude-haiku-4-5")
        add(Probe(f"{header} header, messages", MESSAGES, body, {header: touch(HAIKU)}))
    policy = touch()
    meta = {"tierwise_policy": policy, "policy": policy, "model": policy}
    add(Probe("metadata, chat", CHAT, chat("gpt-4.1-mini", metadata=meta)))
    policy = touch(HAIKU)
    meta = {"user_id": policy, "policy": policy}
    add(Probe("metadata, messages", MESSAGES, message("claude-haiku-4-5", metadata=meta)))
    policy = touch()
    query = httpx2.QueryParams({"model": policy, "policy": policy})
    add(Probe("URL query", f"{CHAT}?{query}", chat("gpt-4.1-mini")))
    return probes, markers


def _file_probes(b: Bench, keys: list[str]) -> tuple[list[Probe], list[Path]]:
    """Probes that each name a file (a JSON schema, a router artifact, a workspace)."""
    probes: list[Probe] = []
    files: list[Path] = []
    base = b.tmp / "commands"

    def schema(tier: str = MINI) -> str:
        files.append(_watched(base / "schemas" / f"s{len(files)}.json", '{"type": "object"}'))
        return f"tierwise/cascade:{tier}?gates=json_schema:{files[-1]}"

    def artifact() -> str:
        name = f"probe{len(files)}"
        files.append(_watched(base / "routers" / name / "v1" / "meta.json", '{"format": 1}'))
        return f"tierwise/route:learned?artifact={name}"

    for key in keys:
        tag = " [auth = false]" if key == "no-auth" else f" [{key} key]"
        probes.append(Probe("json_schema:, chat" + tag, CHAT, chat(schema()), key=key))
        probes.append(Probe("artifact=, chat" + tag, CHAT, chat(artifact()), key=key))
    add = probes.append
    add(Probe("json_schema:, messages", MESSAGES, message(schema(HAIKU))))
    add(Probe("json_schema:, count_tokens", COUNT, message(schema(HAIKU))))
    add(Probe("artifact=, messages", MESSAGES, message(artifact())))
    add(Probe("artifact=, count_tokens", COUNT, message(artifact())))
    ws = base / f"ws{len(files)}"
    files.append(_watched(ws / "secret.txt", "operator data"))
    gates = f"tierwise/cascade:{MINI}?gates=command:true&workspace={ws}"
    add(Probe("workspace= (command true)", CHAT, chat(gates)))
    return probes, files


def _send_all(gw: Live, probes: list[Probe], tokens: dict[str, str]) -> dict[str, str]:
    """Each probe once, with its key's token; the status (or the error) by label."""
    statuses = {}
    with gw.http() as http:
        for probe in probes:
            try:
                reply = post(http, probe.path, tokens[probe.key], probe.body, probe.headers)
                statuses[probe.label] = str(reply.status_code)
            except httpx2.HTTPError as exc:
                statuses[probe.label] = type(exc).__name__
    return statuses


def run_commands(b: Bench) -> list[Count]:
    marks = b.tmp / "commands" / "markers"
    marks.mkdir(parents=True)
    routers = b.tmp / "commands" / "routers"
    routers.mkdir(parents=True)
    extra = toml_table("routing", {"artifacts_dir": str(routers)})
    keys = ["plain", "admin", "no-auth"] + (["inline"] if b.inline_flag else [])
    probes, markers = _command_probes(b, marks, keys)
    file_probes, files = _file_probes(b, keys)
    everything = probes + file_probes
    open_door = [p for p in everything if p.key == "no-auth"]
    with b.gateway("commands", extra=extra) as gw:
        tokens = {"plain": gw.create_key("plain"), "admin": ADMIN_KEY}
        if "inline" in keys:
            tokens["inline"] = gw.create_key("inline", inline=True)
        statuses = _send_all(gw, [p for p in everything if p not in open_door], tokens)
    home = b.tmp / "commands-no-auth"
    with b.gateway("commands-no-auth", gateway={"auth": False}, extra=extra, home=home) as gw:
        statuses |= _send_all(gw, open_door, {"no-auth": "unused"})
    time.sleep(0.5)
    ran = [
        f"{p.label}: {statuses[p.label]}"
        for p, m in zip(probes, markers, strict=True)
        if m.exists()
    ]
    read = [
        f"{p.label}: {statuses[p.label]}"
        for p, f in zip(file_probes, files, strict=True)
        if _was_read(f)
    ]
    return [
        Count("commands", "commands executed", len(ran), len(markers), details=ran),
        Count("commands", "policy files read from the wire", len(read), len(files), details=read),
    ]


# --- budgets ---------------------------------------------------------------------------------


BUDGET_PROMPT = "one two three four five six seven eight nine ten eleven twelve"
"""Twelve tokens by the gateway's estimate: the fake upstream reports 12 input tokens."""


def _request_cost() -> Decimal:
    prices = load_catalog().get(MINI).prices
    assert prices.input is not None and prices.output is not None
    return (12 * prices.input + hu.CHUNKS * prices.output) / 1_000_000


async def _fire(url: str, token: str, bodies: list[bytes]) -> tuple[int, Decimal]:
    """All ``bodies`` at once; (answered 200, sum of their ``x-tierwise-cost-usd``)."""
    limits = httpx2.Limits(max_connections=len(bodies) + 10)
    headers = auth(token) | {"content-type": "application/json"}
    served, spent = 0, Decimal(0)
    async with httpx2.AsyncClient(
        base_url=url, limits=limits, timeout=120, headers=headers, trust_env=False
    ) as client:
        start = asyncio.Event()

        async def one(body: bytes) -> None:
            nonlocal served, spent
            await start.wait()
            reply = await client.post(CHAT, content=body)
            if reply.status_code == 200:
                served += 1
                spent += Decimal(reply.headers.get("x-tierwise-cost-usd", "0"))

        tasks = [asyncio.create_task(one(body)) for body in bodies]
        await asyncio.sleep(0.3)
        start.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return served, spent


def _budget_bodies(mix: str, count: int) -> list[bytes]:
    bodies = []
    for i in range(count):
        tokens: int = hu.CHUNKS
        if mix == "negative" and i % 10 == 0:
            tokens = -1_000_000
        elif mix == "10**30" and i % 2 == 0:
            tokens = 10**30
        body = {"model": "gpt-4.1-mini", "max_tokens": tokens}
        body["messages"] = [{"role": "user", "content": BUDGET_PROMPT}]
        bodies.append(json.dumps(body).encode())
    return bodies


def _redis_available() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 6379), 2) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")
    return False


def run_budgets(b: Bench) -> list[Count]:
    requests, fits = (40, 5) if b.quick else (200, 10)
    cost = _request_cost()
    cap = cost * fits
    backends = ["sqlite"]
    if not b.quick and _redis_available():
        backends.append("redis")
    elif not b.quick:
        b.notes.append("budgets: Redis not reachable, SQLite only")
    counts = []
    b.upstream.latency_s = 0.1
    try:
        for backend in backends:
            prefix = f"tierwise-hostile:{uuid.uuid4().hex[:10]}:"
            gateway = {"budget_store": REDIS_URL} if backend == "redis" else {}
            budgets = {"input_margin": 1.0, "fail_open": True, "redis_prefix": prefix}
            with b.gateway(f"budgets-{backend}", gateway=gateway, budgets=budgets) as gw:
                for mix in ("plain (control)", "negative", "10**30"):
                    name = f"bud-{mix.split()[0].replace('*', 'x')}"
                    token = gw.create_key(name)
                    done = gw.cli("keys", "limits", name, "--usd-total", str(cap))
                    if done.returncode:
                        raise RuntimeError(done.stderr)
                    served, spent = asyncio.run(_fire(gw.url, token, _budget_bodies(mix, requests)))
                    shown = {"negative": "max_tokens <0", "10**30": "max_tokens 10**30"}.get(
                        mix, mix
                    )
                    label = f"[{backend}, {shown}, cap fits {fits}]"
                    counts.append(
                        Count(
                            "budgets",
                            f"budget overshoot requests {label}",
                            max(0, served - fits),
                            requests,
                        )
                    )
                    over = max(Decimal(0), spent - cap)
                    counts.append(
                        Count(
                            "budgets",
                            f"budget overshoot usd {label}",
                            float(over),
                            requests,
                            unit="$",
                        )
                    )
            if backend == "redis":
                _redis_clean(prefix)
    finally:
        b.upstream.latency_s = hu.LATENCY_S
    return counts


def _redis_clean(prefix: str) -> None:

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


# --- allow-lists -----------------------------------------------------------------------------


def run_allowlist(b: Bench) -> list[Count]:
    never = "regex:^NEVER"
    extra = toml_table("policies", {"haiku-plus": f"fixed:{OPUS}"})
    extra += toml_table("cascade", {"tiers": [HAIKU, OPUS], "gates": [never]})
    extra += toml_table("failover.fallbacks", {HAIKU: [MINI]}).replace(f"{HAIKU} =", f'"{HAIKU}" =')
    probes = [
        (
            "unknown parameter ?x=haiku, messages",
            MESSAGES,
            f"tierwise/fixed:{OPUS}?x=haiku",
            "Hello",
        ),
        ("unknown parameter ?x=haiku, chat", CHAT, f"tierwise/fixed:{OPUS}?x=haiku", "Hello"),
        (
            "route:strongest over haiku+opus",
            MESSAGES,
            f"tierwise/route:strongest?candidates={HAIKU},{OPUS}",
            "Hello",
        ),
        ("route:strongest?x=haiku", MESSAGES, "tierwise/route:strongest?x=haiku", "Hello"),
        ("fallback= to opus", MESSAGES, f"tierwise/fixed:{HAIKU}?fallback={OPUS}", "FAIL_HAIKU"),
        ("configured failover", MESSAGES, "claude-haiku-4-5", "FAIL_HAIKU"),
        ("cascade tiers", MESSAGES, f"tierwise/cascade:{HAIKU},{OPUS}?gates={never}", "Hello"),
        ("built-in cascade ?x=haiku", MESSAGES, "tierwise/cascade?x=haiku", "Hello"),
        ("advisor=opus", MESSAGES, f"tierwise/advisor:{HAIKU}?advisor={OPUS}", "Hello"),
        ("named policy haiku-plus", MESSAGES, "haiku-plus", "Hello"),
        ("named policy tierwise/haiku-plus", CHAT, "tierwise/haiku-plus", "Hello"),
        (
            "route:rules over haiku+opus",
            MESSAGES,
            f"tierwise/route:rules?candidates={HAIKU},{OPUS}",
            "Review the security architecture of the auth module across 8 files for token leaks",
        ),
        ("judge gate on opus", MESSAGES, f"tierwise/cascade:{HAIKU}?gates=judge:{OPUS}", "Hello"),
        (
            "classifier model opus",
            MESSAGES,
            f"tierwise/route:classifier?model={OPUS}&candidates={HAIKU}",
            "Hello",
        ),
        ("plan executors opus", MESSAGES, f"tierwise/plan:{HAIKU}?executors={OPUS}", "Hello"),
        ("decompose executors", MESSAGES, f"tierwise/decompose:{HAIKU}?executors={OPUS}", "Hi"),
        (
            "cascade start=route:strongest",
            MESSAGES,
            f"tierwise/cascade:{HAIKU},{OPUS}?start=route:strongest&gates=regex:hello",
            "Hello",
        ),
        ("opus by id (control)", MESSAGES, OPUS, "Hello"),
    ]
    escaped = []
    with b.gateway("allowlist", extra=extra) as gw:
        tokens = {"": gw.create_key("haiku-only", models=("*haiku*",))}
        if b.inline_flag:
            tokens[" [inline key]"] = gw.create_key("haiku-inline", ("*haiku*",), inline=True)
        with gw.http() as http:
            for tag, token in tokens.items():
                for label, path, model, prompt in probes:
                    if (found := _escape(b, http, token, path, model, prompt)) is not None:
                        escaped.append(f"{label}{tag}: {found}")
    tried = len(probes) * len(tokens)
    return [Count("allowlist", "allow-list escapes", len(escaped), tried, details=escaped)]


def _escape(
    b: Bench, http: httpx2.Client, token: str, path: str, model: str, prompt: str
) -> str | None:
    """What ran outside ``*haiku*`` for one request, or None."""
    mark = len(b.upstream.requests)
    body = message(model, prompt=prompt) if path == MESSAGES else chat(model, prompt=prompt)
    reply = post(http, path, token, body)
    called = [m for m in b.upstream.models_since(mark) if "haiku" not in m]
    ran = reply.headers.get("x-tierwise-model", "")
    if called or (reply.status_code == 200 and ran and "haiku" not in ran):
        return f"{reply.status_code} called {called or [ran]}"
    return None


def run_input(b: Bench) -> list[Count]:
    cases = corpus(b.quick)
    five, forwarded, accepted, envelope, hung, paths, injected = [], [], [], [], [], [], []
    with b.gateway("input") as gw:
        token = gw.create_key("plain")
        with gw.http(timeout=20) as http:
            for case in cases:
                mark = len(b.upstream.requests)
                try:
                    reply = post(http, case.path, token, case.body, case.headers)
                except httpx2.HTTPError as exc:
                    hung.append(f"{case.label}: {type(exc).__name__}")
                    continue
                status = reply.status_code
                if "x-evil" in reply.headers:
                    injected.append(f"{case.label}: {status}")
                if str(b.tmp) in reply.text:
                    paths.append(f"{case.label}: {status}")
                if status >= 500:
                    five.append(f"{case.label}: {status} {reply.text[:120]!r}")
                elif not case.invalid:
                    continue
                elif status == 200 and len(b.upstream.requests) > mark:
                    forwarded.append(case.label)
                elif status == 200:
                    accepted.append(case.label)
                elif not in_envelope(case.path, reply):
                    envelope.append(f"{case.label}: {status} {reply.text[:80]!r}")
    tried, invalid = len(cases), sum(c.invalid for c in cases)
    return [
        Count("input", "5xx from client input", len(five), tried, details=five),
        Count(
            "input",
            "invalid inputs forwarded upstream and answered 200",
            len(forwarded),
            invalid,
            details=forwarded,
        ),
        Count(
            "input",
            "invalid inputs answered 200 without an upstream call",
            len(accepted),
            invalid,
            details=accepted,
        ),
        Count(
            "input",
            "client errors outside the API's error envelope",
            len(envelope),
            tried,
            details=envelope,
        ),
        Count(
            "input",
            "inputs that got no answer (reset or 20 s timeout)",
            len(hung),
            tried,
            details=hung,
        ),
        Count("input", "server file paths seen by a client", len(paths), tried, details=paths),
        Count("input", "response headers injected from client input", len(injected), tried),
    ]


# --- secrets --------------------------------------------------------------------------------


def _leaks(text: str, needles: list[str]) -> bool:
    return any(n in text for n in needles)


def _client_view(reply: httpx2.Response) -> str:
    return f"{reply.status_code} {dict(reply.headers)} {reply.text}"


def run_secrets(b: Bench) -> list[Count]:
    counts = _provider_key_leaks(b)
    counts += _database_leaks(b)
    return counts


def _provider_key_leaks(b: Bench) -> list[Count]:
    keys = list(PROVIDER_KEYS.values())
    probes = [
        (CHAT, chat("gpt-4.1-mini", prompt="ECHO_KEY")),
        (CHAT, chat("gpt-4.1-mini", prompt="ECHO_KEY", stream=True)),
        (CHAT, chat("gpt-4.1-mini", prompt="ECHO_KEY_500")),
        (MESSAGES, message("claude-haiku-4-5", prompt="ECHO_KEY")),
        (MESSAGES, message("claude-haiku-4-5", prompt="ECHO_KEY", stream=True)),
        (MESSAGES, message("claude-haiku-4-5", prompt="ECHO_KEY_500")),
        (CHAT, chat("gpt-4.1-mini", prompt="ECHO_KEY_STREAM", stream=True)),
        (MESSAGES, message("claude-haiku-4-5", prompt="ECHO_KEY_STREAM", stream=True)),
    ]
    seen = []
    mark = len(b.upstream.requests)
    with b.gateway("secrets") as gw:
        token = gw.create_key("plain")
        with gw.http() as http:
            for path, body in probes:
                reply = post(http, path, token, body)
                if _leaks(_client_view(reply), keys):
                    prompt = body["messages"][0]["content"]
                    stream = body.get("stream", False)
                    seen.append(f"{path} {prompt} stream={stream}: {reply.status_code}")
    forwarded = sum(
        _leaks(f"{sent.headers} {sent.body!r}", [token]) for sent in b.upstream.requests[mark:]
    )
    export = gw.config.parent / "export.jsonl"
    done = gw.cli("export", "--out", str(export))
    exported = export.read_text("utf-8", "replace") if done.returncode == 0 else ""
    if done.returncode:
        b.notes.append(f"secrets: tierwise export failed: {done.stderr.strip()[:200]}")
    in_export = sum(_leaks(line, keys) for line in exported.splitlines())
    logged = gw.log.read_text("utf-8", "replace").splitlines()
    in_log = sum(_leaks(line, keys) for line in logged)
    return [
        Count("secrets", "provider keys seen by a client", len(seen), len(probes), details=seen),
        Count("secrets", "ledger export lines with a provider key", in_export, len(probes)),
        Count("secrets", "server log lines with a provider key", in_log, len(probes)),
        Count("secrets", "upstream requests carrying the client's own key", forwarded, len(probes)),
    ]


def _postgres_available() -> bool:
    try:
        psycopg.connect("postgresql://postgres@127.0.0.1/test", connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


@contextmanager
def _schema() -> Iterator[str]:

    name = f"tierwise_hostile_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1/test", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1/test", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


DRIVER_WORDS = (
    "psycopg",
    "sqlalchemy",
    "OperationalError",
    "connection to server",
    "Connection refused",
    "Background on this error",
)


def _database_leaks(b: Bench) -> list[Count]:
    if not _postgres_available():
        b.notes.append("secrets: PostgreSQL not reachable, no store-down probes")
        return []

    secret_hits, driver_hits, tried = [], [], 0
    with ExitStack() as stack:
        schema = stack.enter_context(_schema())
        proxy = stack.enter_context(tcp_proxy.forwarding(POSTGRES))
        url = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{proxy.port}/test"
        url += f"?options=-csearch_path%3D{schema}"
        needles = [DB_PASSWORD, f"127.0.0.1:{proxy.port}", schema, "postgresql://"]
        gateway = {"idempotency": "ledger", "key_cache_s": 60, "ledger_close_timeout_s": 2}
        gw = stack.enter_context(b.gateway("secrets-db", gateway=gateway, ledger_url=url))
        token = gw.create_key("limited")
        gw.cli("keys", "limits", "limited", "--usd-total", "100")
        fake = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
        with gw.http() as http:
            post(http, CHAT, token, chat("gpt-4.1-mini"))  # the key is cached now
            proxy.cut()
            probes: list[Callable[[], httpx2.Response]] = [
                lambda: post(http, CHAT, token, chat("gpt-4.1-mini")),
                lambda: post(http, MESSAGES, token, message("claude-haiku-4-5")),
                lambda: post(
                    http, CHAT, token, chat("gpt-4.1-mini"), {"idempotency-key": "db-down-1"}
                ),
                lambda: post(http, CHAT, fake, chat("gpt-4.1-mini")),
                lambda: http.get("/readyz"),
                lambda: http.get("/dashboard/api/summary", headers=auth(ADMIN_KEY)),
                lambda: http.get("/dashboard/api/decisions", headers=auth(ADMIN_KEY)),
                lambda: http.get("/v1/models", headers=auth(fake)),
            ]
            for probe in probes:
                tried += 1
                try:
                    reply = probe()
                except httpx2.HTTPError:
                    continue
                view = _client_view(reply)
                label = f"{reply.request.method} {reply.request.url.path} {reply.status_code}"
                if _leaks(view, needles):
                    secret_hits.append(label)
                if _leaks(view, list(DRIVER_WORDS)):
                    driver_hits.append(f"{label}: {reply.text[:100]!r}")
    return [
        Count(
            "secrets",
            "database location or password seen by a client (store down)",
            len(secret_hits),
            tried,
            details=secret_hits,
        ),
        Count(
            "secrets",
            "driver errors seen by a client (store down)",
            len(driver_hits),
            tried,
            details=driver_hits,
        ),
    ]


# --- reach ------------------------------------------------------------------------------------


SESSION_COOKIE = "tierwise_dashboard"
LOCAL_PORTS = {"ollama": 11434, "vllm": 8000, "llamacpp": 8080}


def run_reach(b: Bench) -> list[Count]:
    sockets = {}
    for name, port in LOCAL_PORTS.items():
        if (sock := hu.bind(port)) is not None:
            sockets[name] = sock
        else:
            b.notes.append(f"reach: 127.0.0.1:{port} ({name}) is taken, not watched")
    if not sockets:
        return []
    models = [
        "ollama:llama3.1:8b",
        "tierwise/fixed:ollama:llama3.1:8b",
        "qwen2.5-coder:7b",
        "vllm:meta-llama/Llama-3.1-8B-Instruct",
        "tierwise/fixed:vllm:meta-llama/Llama-3.1-8B-Instruct",
        "llamacpp:local",
        "tierwise/fixed:llamacpp:local",
        "tierwise/route:cheapest",
        "tierwise/cascade",
        "tierwise/route:cheapest?candidates=ollama:llama3.1:8b",
        "tierwise/cascade:ollama:llama3.1:8b",
        "tierwise/route:rules",
    ]
    probes = [(CHAT, chat(m)) for m in models] + [(MESSAGES, message(m)) for m in models[:6]]
    probes.append(
        (
            MESSAGES,
            message(f"tierwise/fixed:{HAIKU}?fallback=ollama:llama3.1:8b", prompt="FAIL_HAIKU"),
        )
    )
    local_url = "http://127.0.0.1:11434/v1"
    for name in ("api_base", "base_url", "url"):  # fields other proxies take from clients
        probes.append((CHAT, chat("gpt-4.1-mini", **{name: local_url})))
    probes.append((CHAT, chat("gpt-4.1-mini", extra_body={"base_url": local_url})))
    with hu.serving(list(sockets.values())) as local, b.gateway("reach") as gw:
        token = gw.create_key("plain")
        details = []
        with gw.http() as http:
            for path, body in probes:
                before = len(local.requests)
                status: object = "no answer"
                with contextlib.suppress(httpx2.HTTPError):
                    status = post(http, path, token, body).status_code
                if len(local.requests) > before:
                    fields = sorted(set(body) - {"model", "messages", "max_tokens"})
                    details.append(f"{path} {body['model']} {fields}: {status}")
        reached = len(details)
    ports = ", ".join(f"{LOCAL_PORTS[n]}" for n in sockets)
    name = f"requests that reached unconfigured local hosts ({ports})"
    return [Count("reach", name, reached, len(probes), details=details)]


# --- dashboard --------------------------------------------------------------------------------


def run_dashboard(b: Bench) -> list[Count]:
    auth_fields = b.supported({"auth_failures": 10})
    limit = int(auth_fields.get("auth_failures", 5))
    tries = 3 * limit
    with b.gateway("dashboard") as gw, gw.http() as http:
        still_valid, weak = _session_probe(http)
        not_throttled = 0
        targets = ["/dashboard/api/summary", "/metrics", "/dashboard/api/decisions"]
        for i in range(tries):
            reply = http.get(
                targets[i % len(targets)], headers={"authorization": f"Bearer guess-{i}"}
            )
            if i >= limit and reply.status_code != 429:
                not_throttled += 1
        bypasses = 0
        for i in range(tries):
            headers = {
                "x-forwarded-for": f"10.{i // 250}.{i % 250}.7",
                "content-type": "application/x-www-form-urlencoded",
            }
            reply = http.post("/dashboard/login", content=f"key=wrong-{i}", headers=headers)
            if i >= limit and reply.status_code != 429:
                bypasses += 1
    note = f"{tries} failed tries, {limit} allowed"
    return [
        Count(
            "dashboard",
            "X-Forwarded-For rotations past the login throttle",
            bypasses,
            tries - limit,
            note=note,
        ),
        Count(
            "dashboard",
            "Bearer admin-key guesses not throttled",
            not_throttled,
            tries - limit,
            note=note,
        ),
        Count("dashboard", "session cookies still valid after logout", still_valid, 1),
        Count("dashboard", "session cookies without HttpOnly or SameSite", weak, 1),
    ]


def _session_probe(http: httpx2.Client) -> tuple[int, int]:
    """(1 if the session cookie still works after logout, 1 if it lacks HttpOnly or
    SameSite)."""
    form = {"content-type": "application/x-www-form-urlencoded"}
    login = http.post("/dashboard/login", content=f"key={ADMIN_KEY}", headers=form)
    set_cookie = next(
        (c for c in login.headers.get_list("set-cookie") if c.startswith(f"{SESSION_COOKIE}=")),
        "",
    )
    if not set_cookie:
        raise RuntimeError(f"dashboard login failed: {login.status_code}")
    flags = set_cookie.lower()
    weak = int("httponly" not in flags or "samesite=" not in flags or "samesite=none" in flags)
    jar = {"cookie": set_cookie.split(";")[0]}
    http.cookies.clear()
    http.post("/dashboard/logout", headers=jar)
    http.cookies.clear()
    after = http.get("/dashboard/api/summary", headers=jar)
    return int(after.status_code == 200), weak


# --- idempotency ------------------------------------------------------------------------------


def run_idempotency(b: Bench) -> list[Count]:
    twice = []
    lengths = (256, 300, 4000)
    replayed, tried_revoked, crossed = [], 0, []
    with b.gateway("idempotency") as gw:
        token = gw.create_key("plain")
        with gw.http() as http:
            for length in lengths:
                key = ("k" * length)[:length]
                mark = len(b.upstream.requests)
                body = chat("gpt-4.1-mini", prompt=f"once {length}")
                first = post(http, CHAT, token, body, {"idempotency-key": key})
                second = post(http, CHAT, token, body, {"idempotency-key": key})
                calls = len(b.upstream.requests) - mark
                if first.status_code == second.status_code == 200 and calls >= 2:
                    twice.append(f"{length} chars: both 200, {calls} upstream calls")
            other = gw.create_key("other")
            body = chat("gpt-4.1-mini", prompt="mine")
            post(http, CHAT, token, body, {"idempotency-key": "shared-key-1"})
            mark = len(b.upstream.requests)
            theirs = post(http, CHAT, other, body, {"idempotency-key": "shared-key-1"})
            if theirs.status_code == 200 and len(b.upstream.requests) == mark:
                crossed.append("another key's Idempotency-Key answered from the store")
            revocable = gw.create_key("revocable")
            cases = [
                (CHAT, chat("gpt-4.1-mini", prompt="revoke me")),
                (MESSAGES, message("claude-haiku-4-5", prompt="revoke me", stream=True)),
            ]
            firsts = []
            for i, (path, body) in enumerate(cases):
                firsts.append(
                    post(
                        http, path, revocable, body, {"idempotency-key": f"revoked-{i}"}
                    ).status_code
                )
            done = gw.cli("keys", "revoke", "revocable")
            if done.returncode:
                raise RuntimeError(done.stderr)
            time.sleep(1.5)  # past key_cache_s (0.5)
            for i, (path, body) in enumerate(cases):
                tried_revoked += 1
                reply = post(http, path, revocable, body, {"idempotency-key": f"revoked-{i}"})
                if firsts[i] == 200 and reply.status_code == 200:
                    replayed.append(f"{path}: replayed={reply.headers.get('idempotent-replayed')}")
    return [
        Count(
            "idempotency",
            "over-long Idempotency-Keys ignored (billed twice)",
            len(twice),
            len(lengths),
            details=twice,
        ),
        Count("idempotency", "answers replayed to another key", len(crossed), 1, details=crossed),
        Count(
            "idempotency",
            "replays after the key was revoked",
            len(replayed),
            tried_revoked,
            details=replayed,
        ),
    ]


# --- slow and idle clients --------------------------------------------------------------------


def _raw_request(path: str, token: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    head += f"authorization: Bearer {token}\r\ncontent-length: {len(data)}\r\n\r\n"
    return head.encode() + data


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), 5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (reading whatever it sent first)."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def _read_response(sock: socket.socket) -> None:
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    while len(rest) < length:
        rest += sock.recv(65536)


def run_slowclients(b: Bench) -> list[Count]:
    settings = b.supported(WANTED_TIMEOUTS)
    streams, idle = (2, 2) if b.quick else (4, 5)
    held_count, open_counts = 0, {}
    with b.gateway("slowclients", gateway=settings) as gw, ExitStack() as stack:
        port = int(gw.url.rsplit(":", 1)[1])
        token = gw.create_key("plain")
        base = gw.in_flight()
        readers = []
        for _ in range(streams):
            sock = stack.enter_context(_connect(port))
            sock.sendall(
                _raw_request(CHAT, token, chat("gpt-4.1-mini", prompt="BIG_STREAM", stream=True))
            )
            readers.append(sock)
        deadline = time.monotonic() + 10
        while gw.in_flight() - base < streams and time.monotonic() < deadline:
            time.sleep(0.1)
        kinds: dict[str, list[socket.socket]] = {
            k: [] for k in ("connect-only", "slow-header", "idle keep-alive", "slow-body")
        }
        for _ in range(idle):
            kinds["connect-only"].append(stack.enter_context(_connect(port)))
            slow = stack.enter_context(_connect(port))
            slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n")
            kinds["slow-header"].append(slow)
            alive = stack.enter_context(_connect(port))
            alive.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            _read_response(alive)
            kinds["idle keep-alive"].append(alive)
            body = stack.enter_context(_connect(port))
            head = _raw_request(CHAT, token, chat("gpt-4.1-mini"))
            body.sendall(head[: head.index(b"\r\n\r\n") + 14])
            kinds["slow-body"].append(body)
        time.sleep(SLOW_WAIT_S)
        held_count = max(0, min(streams, round(gw.in_flight() - base)))
        open_counts = {k: sum(not _closed(s) for s in socks) for k, socks in kinds.items()}
    wait = f"looked after {SLOW_WAIT_S:g} s"
    counts = [
        Count(
            "slowclients",
            "slots held by non-reading stream clients after the timeout",
            held_count,
            streams,
            note=wait,
        )
    ]
    for kind, still in open_counts.items():
        counts.append(
            Count(
                "slowclients",
                f"{kind} connections still open after the timeout",
                still,
                idle,
                note=wait,
            )
        )
    return counts


# --- unauthenticated uploads ------------------------------------------------------------------


def run_uploads(b: Bench) -> list[Count]:
    uploads, size = (3, 30) if b.quick else (10, 30)
    limit_mb = GatewayConfig().max_body_bytes / 2**20
    filler = b"a" * (size * 2**20)
    body = b'{"model":"gpt-4.1-mini","messages":[{"role":"user","content":"' + filler + b'"}]}'
    with b.gateway("uploads") as gw:
        with gw.http() as http:
            post(http, CHAT, ADMIN_KEY, chat("gpt-4.1-mini"))  # warm
        time.sleep(0.5)
        base = rss_mb(gw.proc.pid)
        peak = base
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_mb(gw.proc.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            asyncio.run(_upload_all(gw.url, body, uploads))
            time.sleep(0.5)
        finally:
            stop.set()
            sampler.join()
    growth = round(peak - base)
    note = f"{base:.0f} -> {peak:.0f} MB"
    return [
        Count(
            "uploads",
            f"RSS growth under unauthenticated {size} MB uploads",
            growth,
            uploads,
            bound=limit_mb,
            unit=" MB",
            note=note,
        )
    ]


async def _upload_all(url: str, body: bytes, count: int) -> None:
    async with httpx2.AsyncClient(base_url=url, timeout=120, trust_env=False) as client:

        async def chunked() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 1 << 20):
                yield body[start : start + (1 << 20)]

        async def one(i: int) -> None:
            headers = {"authorization": "Bearer tw_not_a_key", "idempotency-key": f"upload-{i}"}
            headers["content-type"] = "application/json"
            content = chunked() if i % 2 else body  # every other one without a length
            with contextlib.suppress(httpx2.HTTPError):
                await client.post(CHAT, content=content, headers=headers)

        await asyncio.gather(*(one(i) for i in range(count)))


# --- kill -9 ----------------------------------------------------------------------------------


def run_kill9(b: Bench) -> list[Count]:
    duration = 2.0 if b.quick else 10.0
    try:
        from kill9 import kill9_loss  # noqa: PLC0415  (bench/kill9.py, when present)

        measure = kill9_loss
        how = "bench/kill9.py"
    except ImportError:
        measure = lambda rate, seconds: _kill9_loss(b, rate, seconds)  # noqa: E731
        how = "own version (no bench/kill9.py)"
        b.notes.append("kill9: bench/kill9.py absent, measured with this script's own version")
    counts = []
    for rate in (50, 200):
        answered, lost = measure(rate, duration)
        note = f"{answered} answered in {duration:g} s, {how}"
        counts.append(
            Count(
                "kill9",
                f"answered requests lost after kill -9 at {rate} RPS",
                lost,
                answered,
                note=note,
            )
        )
    return counts


def _kill9_loss(b: Bench, rate: int, duration: float) -> tuple[int, int]:
    """Answered requests whose task or calls are missing from the ledger after ``kill -9``
    (and a restart on the same ledger, which may replay a journal or a spill)."""
    from tierwise.ledger.store import Ledger  # noqa: PLC0415

    home = b.tmp / f"kill9-{rate}"
    with b.gateway(f"kill9-{rate}", home=home) as gw:
        token = gw.create_key("plain")
        answered = asyncio.run(_open_loop(gw, token, rate, duration))
        ledger_url = gw.ledger_url
    with b.gateway(f"kill9-{rate}", home=home):
        pass  # started on the same ledger, then stopped cleanly
    with Ledger.open(ledger_url) as ledger:
        tasks = {t.id for t in ledger.tasks()}
        called = {c.task_id for c in ledger.calls()}
    lost = sum(1 for tid in answered if tid not in tasks or tid not in called)
    return len(answered), lost


async def _open_loop(gw: Live, token: str, rate: int, duration: float) -> list[str]:
    answered: list[str] = []
    body = json.dumps(chat("gpt-4.1-mini")).encode()
    headers = auth(token) | {"content-type": "application/json"}
    limits = httpx2.Limits(max_connections=1000)
    async with httpx2.AsyncClient(
        base_url=gw.url, timeout=30, limits=limits, headers=headers, trust_env=False
    ) as client:

        async def one() -> None:
            with contextlib.suppress(httpx2.HTTPError):
                reply = await client.post(CHAT, content=body)
                if reply.status_code == 200 and (tid := reply.headers.get("x-tierwise-task-id")):
                    answered.append(tid)

        tasks = []
        start = time.monotonic()
        for i in range(int(rate * duration)):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.sleep(0.05)
        gw.kill()
        await asyncio.gather(*tasks, return_exceptions=True)
    return answered


# --- the run ----------------------------------------------------------------------------------


CLASSES: dict[str, Callable[[Bench], list[Count]]] = {
    "commands": run_commands,
    "budgets": run_budgets,
    "allowlist": run_allowlist,
    "input": run_input,
    "secrets": run_secrets,
    "reach": run_reach,
    "dashboard": run_dashboard,
    "idempotency": run_idempotency,
    "slowclients": run_slowclients,
    "uploads": run_uploads,
    "kill9": run_kill9,
}


def _as_json(count: Count) -> dict[str, Any]:
    found = asdict(count)
    return {"class": found.pop("klass"), **found, "bad": count.bad}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated classes: {','.join(CLASSES)}")
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument("--json", action="store_true", help="JSON on stdout (lines on stderr)")
    parser.add_argument("--details", action="store_true", help="print what each count counted")
    args = parser.parse_args(argv)
    chosen = list(CLASSES) if not args.only else [c.strip() for c in args.only.split(",")]
    unknown = [c for c in chosen if c not in CLASSES]
    if unknown:
        parser.error(f"unknown class {', '.join(unknown)} (known: {', '.join(CLASSES)})")
    out = sys.stderr if args.json else sys.stdout
    counts: list[Count] = []
    failed: dict[str, str] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tierwise-hostile-") as name:
        sock = hu.bind(0)
        assert sock is not None
        with hu.serving([sock]) as upstream:
            bench = Bench(Path(name), upstream, args.quick)
            for klass in chosen:
                try:
                    found = CLASSES[klass](bench)
                except Exception as exc:  # one class failing must not hide the others
                    failed[klass] = f"{type(exc).__name__}: {exc}"
                    print(f"{klass}: FAILED {failed[klass][:500]}", file=out, flush=True)
                    continue
                for count in found:
                    print(count.line(), file=out, flush=True)
                    if args.details:
                        for detail in count.details:
                            print(f"    {detail}", file=out)
                counts += found
    bad = [c for c in counts if c.bad]
    elapsed = time.monotonic() - started
    print(
        f"\n{len(counts)} counts from {len(chosen) - len(failed)} classes in {elapsed:.0f} s",
        file=out,
    )
    for note in bench.notes:
        print(f"note: {note}", file=out)
    if bad:
        print(
            f"NON-ZERO ({len(bad)}): " + "; ".join(f"{c.name} = {c.value:g}" for c in bad), file=out
        )
    else:
        print("all counts 0 (within bounds)", file=out)
    if failed:
        print(f"classes that failed to run: {', '.join(failed)}", file=out)
    if args.json:
        payload = {
            "counts": [_as_json(c) for c in counts],
            "nonzero": [c.name for c in bad],
            "failed": failed,
            "notes": bench.notes,
            "quick": args.quick,
            "seconds": round(elapsed, 1),
        }
        print(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
