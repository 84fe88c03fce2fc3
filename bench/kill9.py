"""Answered requests lost to ``kill -9``: drive ``tierwise serve``, SIGKILL it mid-load, count.

Issue 13 §10. A fake upstream (bench/fake_upstream.py, its own process) and ``tierwise serve
--workers N`` (its own process group, auth off, SQLite ledger in a temporary folder, the
shipped write-behind and journal settings unless told otherwise) take an open-loop load of
``rate`` requests per second for ``duration_s``, every other one a stream. Then the whole
process group gets SIGKILL with requests still running, the gateway is started again on the
same ledger (it replays what it finds) and stopped. A request is *answered* when the client got
its whole answer: a 200 with its JSON body, or a stream through ``data: [DONE]``; it is *lost*
when the ledger then lacks its task (``x-tierwise-task-id``) or the task's calls. Also counted:
tasks stored without any call. Usage::

    .venv/bin/python bench/kill9.py                  # 50 and 200 RPS, 10 s each
    .venv/bin/python bench/kill9.py --rates 50 --duration 5 --no-journal

``--hold-ledger`` keeps the ledger locked (another connection holds SQLite's write lock) while
the load runs, so that every record is still queued when the kill lands: the worst case, and
what the tests use to be deterministic. From another script::

    from kill9 import kill9_loss
    answered, lost = kill9_loss(50, 10.0)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # run as a script, imported by path, or as bench.kill9
    sys.path.insert(0, str(BENCH))

from processes import free_port, process, wait_http  # noqa: E402

from tierwise.ledger.store import Ledger  # noqa: E402

MODEL = "gpt-4.1-mini"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


@dataclass(frozen=True)
class Kill9Result:
    """What one run saw."""

    answered: int
    lost: int
    """Answered requests whose task or calls are missing from the ledger after the restart."""
    orphans: int
    """Tasks stored without a single call."""
    sent: int


# --- the gateway -----------------------------------------------------------------------------


def _config(tmp: Path, upstream_port: int, gateway_port: int, extra: str) -> Path:
    config = tmp / "tierwise.toml"
    config.write_text(
        f'default_policy = "fixed:openai:{MODEL}"\n'
        f'ledger_url = "sqlite:///{tmp / "ledger.db"}"\n'
        f'ledger_spill_dir = "{tmp / "spill"}"\n'
        "[providers.openai]\n"
        'kind = "openai"\n'
        f'base_url = "http://127.0.0.1:{upstream_port}/v1"\n'
        'api_key = "sk-bench"\n'
        "max_retries = 0\n"
        "[gateway]\n"
        f"port = {gateway_port}\n"
        "auth = false\n"
        'budget_store = "memory"\n'
        "max_loop_lag_ms = 0\n"
        "max_accept_queue = 0\n"
        "drain_s = 2\n"
        f"{extra}\n",
        "utf-8",
    )
    return config


@contextmanager
def _gateway(config: Path, workers: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``tierwise serve`` in its own process group (so that one SIGKILL reaches every
    process); killed on the way out if it is still there."""
    command = [sys.executable, "-m", "tierwise", "--config", str(config), "serve"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*command, "--workers", str(workers)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def _wait_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def _kill9(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)


@contextmanager
def _ledger_locked(database: Path, locked: bool) -> Iterator[None]:
    """SQLite's write lock held by another connection (the gateway's writer waits)."""
    if not locked:
        yield
        return
    conn = sqlite3.connect(database, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


# --- the load --------------------------------------------------------------------------------


async def _one(http: httpx2.AsyncClient, stream: bool, answered: list[str]) -> None:
    """One request; its task id in ``answered`` once the whole answer is in."""
    body = BODY | ({"stream": True, "stream_options": {"include_usage": True}} if stream else {})
    try:
        if not stream:
            response = await http.post("/v1/chat/completions", json=body)
            if response.status_code == 200 and response.json().get("choices"):
                answered.append(response.headers["x-tierwise-task-id"])
            return
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return
            task = response.headers["x-tierwise-task-id"]
            async for line in response.aiter_lines():
                if line.strip() == "data: [DONE]":
                    answered.append(task)
    except (httpx2.HTTPError, ValueError, KeyError):
        return  # cut by the kill: not answered


async def _load(
    port: int, rate: float, duration_s: float, kill: asyncio.Event
) -> tuple[int, list[str]]:
    """Open loop at ``rate`` until ``duration_s``, then ``kill`` is set with requests still
    running; the number sent and the task ids answered."""
    answered: list[str] = []
    limits = httpx2.Limits(max_connections=2000, max_keepalive_connections=2000)
    async with httpx2.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits, trust_env=False
    ) as http:
        running: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        sent = 0
        while (now := time.monotonic() - start) < duration_s:
            task = asyncio.create_task(_one(http, sent % 2 == 1, answered))
            running.add(task)
            task.add_done_callback(running.discard)
            sent += 1
            await asyncio.sleep(max(0.0, sent / rate - now))
        kill.set()  # with the last ones still in flight
        if running:
            await asyncio.wait(running, timeout=30)
    return sent, answered


def _kill9_workers(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL every worker of the supervisor ``proc``, not itself (it starts new ones)."""
    workers = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == proc.pid and b"spawn_main" in command:
            workers.append(int(entry.name))
    if not workers:
        raise SystemExit("no worker process to kill (workers_only needs --workers 2 or more)")
    for pid in workers:
        os.kill(pid, signal.SIGKILL)


async def _drive_and_kill(
    port: int, rate: float, duration_s: float, proc: subprocess.Popen[bytes], workers_only: bool
) -> tuple[int, list[str]]:
    kill = asyncio.Event()

    async def killer() -> None:
        await kill.wait()
        await asyncio.to_thread(_kill9_workers if workers_only else _kill9, proc)

    killing = asyncio.create_task(killer())
    sent, answered = await _load(port, rate, duration_s, kill)
    await killing
    return sent, answered


# --- counting --------------------------------------------------------------------------------


def _count(ledger_url: str, answered: list[str]) -> tuple[int, int]:
    """Answered tasks missing (or without calls) and tasks without any call."""
    with Ledger.open(ledger_url) as ledger:
        tasks = {task.id for task in ledger.tasks()}
        with_calls = {call.task_id for call in ledger.calls()}
    lost = sum(1 for task in answered if task not in tasks or task not in with_calls)
    return lost, len(tasks - with_calls)


def kill9_run(
    rate: float,
    duration_s: float,
    *,
    workers: int = 2,
    journal: bool | None = None,
    hold_ledger: bool = False,
    gateway_toml: str = "",
    chunk_ms: float = 1.0,
    workers_only: bool = False,
) -> Kill9Result:
    """One run (see the module); ``journal``: ``[gateway] journal`` (None: the default);
    ``gateway_toml``: more ``[gateway]`` lines; ``chunk_ms``: the upstream's gap between its
    5 stream chunks (long: streams still running when the kill lands); ``workers_only``: kill
    the workers, not their supervisor (it starts new ones, which replay the journals), then
    stop the gateway with SIGTERM before the restart."""
    setting = "" if journal is None else f"journal = {'true' if journal else 'false'}\n"
    extra = setting + gateway_toml
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        up_port, port = free_port(), free_port()
        upstream = [sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(up_port)]
        upstream += ["--latency-ms", "20", "--chunks", "5", "--chunk-ms", str(chunk_ms)]
        config = _config(tmp, up_port, port, extra)
        log = tmp / "tierwise.log"
        with process(upstream, dict(os.environ), tmp / "upstream.log"):
            _wait_port(up_port)
            with _gateway(config, workers, log) as proc:
                wait_http(port, "/readyz", 120)
                with _ledger_locked(tmp / "ledger.db", hold_ledger):
                    run = _drive_and_kill(port, rate, duration_s, proc, workers_only)
                    sent, answered = asyncio.run(run)
                if workers_only:  # the new workers replay, the ledger unlocked
                    wait_http(port, "/readyz", 120)
                    _stop(proc)
            with _gateway(config, workers, log) as proc:  # the restart replays what it finds
                wait_http(port, "/readyz", 120)
                _stop(proc)
        lost, orphans = _count(f"sqlite:///{tmp / 'ledger.db'}", answered)
    return Kill9Result(len(answered), lost, orphans, sent)


def kill9_loss(rate: int, duration_s: float) -> tuple[int, int]:
    """Answered requests and how many of them ``kill -9`` lost, at ``rate`` RPS for
    ``duration_s`` seconds (shipped settings, 2 workers)."""
    result = kill9_run(rate, duration_s)
    return result.answered, result.lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50,200", help="requests per second, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per rate")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-journal", action="store_true", help="[gateway] journal = false")
    parser.add_argument("--hold-ledger", action="store_true", help="the ledger locked meanwhile")
    args = parser.parse_args()
    for rate in (float(r) for r in args.rates.split(",")):
        result = kill9_run(
            rate,
            args.duration,
            workers=args.workers,
            journal=False if args.no_journal else None,
            hold_ledger=args.hold_ledger,
        )
        print(
            f"kill -9 at {rate:g} RPS after {args.duration:g} s ({args.workers} workers, "
            f"{'journal = false' if args.no_journal else 'shipped settings'}): sent {result.sent}, "
            f"answered {result.answered}, lost {result.lost}; tasks without calls "
            f"{result.orphans}"
        )


if __name__ == "__main__":
    main()
