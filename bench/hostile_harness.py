"""The live gateway bench/hostile_clients.py attacks: its config, process, keys and HTTP.

:meth:`Bench.gateway` starts ``tierwise serve`` in its own process with a config in a temp
directory (providers pointing at the loopback fake upstream with :data:`PROVIDER_KEYS`, no
retries, the admin key :data:`ADMIN_KEY`, its own ledger and XDG dirs, no proxy or API-key
variables) and stops it at the end; :class:`Live` runs ``tierwise`` commands against it
(keys) and reads its in-flight gauge. :class:`Count` is one result line.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hostile_upstream as hu
import httpx2
from processes import free_port

from tierwise.gateway.config import GatewayConfig

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "tw-bench-admin-" + secrets.token_hex(16)
PROVIDER_KEYS = {
    "openai": "sk-bench-openai-" + secrets.token_hex(16),
    "anthropic": "sk-ant-bench-" + secrets.token_hex(16),
}
"""The provider keys the gateway is configured with (the upstream echoes them on cue)."""
CHAT, MESSAGES, COUNT = "/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens"
MINI, HAIKU, OPUS = "openai:gpt-4.1-mini", "anthropic:claude-haiku-4-5", "anthropic:claude-opus-4-7"


# --- results -------------------------------------------------------------------------------


@dataclass
class Count:
    klass: str
    name: str
    value: int | float
    tried: int
    bound: float = 0
    """The value that still passes (0, or the body limit for RSS growth)."""
    unit: str = ""
    note: str = ""
    details: list[str] = field(default_factory=list)

    @property
    def bad(self) -> bool:
        return self.value > self.bound

    def line(self) -> str:
        value = f"{self.value:g}" if isinstance(self.value, float) else str(self.value)
        value = f"${value}" if self.unit == "$" else f"{value}{self.unit}"
        text = f"{self.name}: {value} (tried {self.tried})"
        if self.bound:
            text += f" [bound {self.bound:g}{self.unit}]"
        return text + (f"  -- {self.note}" if self.note else "")


# --- the gateway under test -----------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def toml_table(name: str, values: dict[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())


def clean_env(home: Path) -> dict[str, str]:
    drop = ("http_proxy", "https_proxy", "all_proxy")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TIERWISE_") and not k.endswith("_API_KEY") and k.lower() not in drop
    }
    for name in ("CONFIG", "DATA", "STATE", "CACHE"):
        env[f"XDG_{name}_HOME"] = str(home / name.lower())
    env["TIERWISE_ADMIN_KEY"] = ADMIN_KEY
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def proc_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def rss_mb(pid: int) -> float:
    total = 0
    for p in proc_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


@dataclass
class Live:
    """A running ``tierwise serve``."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    ledger_url: str
    config: Path
    env: dict[str, str]
    log: Path
    bench: Bench

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "tierwise", "--config", str(self.config)]
        command += ["--ledger", self.ledger_url, *args]
        return subprocess.run(
            command, check=False, env=self.env, capture_output=True, text=True, timeout=120
        )

    def create_key(self, name: str, models: tuple[str, ...] = (), inline: bool = False) -> str:
        args = ["keys", "create", name]
        for pattern in models:
            args += ["--models", pattern]
        if inline and self.bench.inline_flag:
            args.append("--inline-policies")
        done = self.cli(*args)
        if done.returncode != 0:
            raise RuntimeError(f"keys create {name}: {done.stderr.strip()}")
        return done.stdout.strip().splitlines()[-1].strip()

    def http(self, timeout: float = 30) -> httpx2.Client:
        return httpx2.Client(base_url=self.url, timeout=timeout, trust_env=False)

    def in_flight(self) -> float:
        with self.http(5) as http:
            text = http.get("/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text
        for line in text.splitlines():
            if line.startswith("tierwise_gateway_in_flight"):
                return float(line.split()[-1])
        return 0.0

    def stop(self) -> None:
        for pid in [self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(40)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """``kill -9`` the gateway and any process it started."""
        for pid in proc_tree(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)


def auth(token: str, api: str = "openai") -> dict[str, str]:
    if api == "anthropic":
        return {"x-api-key": token, "anthropic-version": "2023-06-01"}
    return {"authorization": f"Bearer {token}"}


@dataclass
class Bench:
    tmp: Path
    upstream: hu.Upstream
    quick: bool
    notes: list[str] = field(default_factory=list)
    fields: frozenset[str] = frozenset(GatewayConfig.model_fields)
    _inline: bool | None = None

    @property
    def inline_flag(self) -> bool:
        """Whether ``tierwise keys create`` has ``--inline-policies`` (issue 13 §1)."""
        if self._inline is None:
            command = [sys.executable, "-m", "tierwise", "keys", "create", "--help"]
            env = clean_env(self.tmp / "help")
            done = subprocess.run(
                command, check=False, env=env, capture_output=True, text=True, timeout=60
            )
            self._inline = "--inline-policies" in done.stdout
        return self._inline

    def supported(self, wanted: dict[str, Any]) -> dict[str, Any]:
        """The ``[gateway]`` settings of ``wanted`` this tierwise knows; notes the others."""
        missing = sorted(set(wanted) - self.fields)
        if missing:
            note = f"[gateway] {', '.join(missing)} absent in this tierwise"
            if note not in self.notes:
                self.notes.append(note)
        return {k: v for k, v in wanted.items() if k in self.fields}

    def config_text(self, gateway: dict[str, Any], extra: str, budgets: dict[str, Any]) -> str:
        up = self.upstream.url
        providers = ""
        for name, base in (("openai", f"{up}/v1"), ("anthropic", up)):
            row = {"kind": name, "base_url": base, "api_key": PROVIDER_KEYS[name]}
            row |= {"max_retries": 0}
            providers += toml_table(f"providers.{name}", row)
        settings = {"max_loop_lag_ms": 0, "key_cache_s": 0.5, "drain_s": 2} | gateway
        text = f'default_policy = "fixed:{MINI}"\n' + providers
        text += toml_table("gateway", settings)
        if budgets:
            text += toml_table("gateway.budgets", budgets)
        return text + extra

    @contextmanager
    def gateway(
        self,
        name: str,
        *,
        gateway: dict[str, Any] | None = None,
        extra: str = "",
        budgets: dict[str, Any] | None = None,
        ledger_url: str | None = None,
        home: Path | None = None,
    ) -> Iterator[Live]:
        """``tierwise serve`` for one class, stopped (SIGTERM, then SIGKILL) at the end."""
        home = home or self.tmp / name
        home.mkdir(parents=True, exist_ok=True)
        config = home / "config.toml"
        config.write_text(self.config_text(gateway or {}, extra, budgets or {}), "utf-8")
        ledger_url = ledger_url or f"sqlite:///{home / 'ledger.db'}"
        port = free_port()
        env = clean_env(home)
        command = [sys.executable, "-m", "tierwise", "--config", str(config)]
        command += ["--ledger", ledger_url, "serve", "--port", str(port)]
        log = home / f"serve-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        live = Live(name, f"http://127.0.0.1:{port}", proc, ledger_url, config, env, log, self)
        try:
            _wait_ready(live)
            yield live
        finally:
            if proc.poll() is None:
                live.stop()


def _wait_ready(live: Live) -> None:
    deadline = time.monotonic() + 90
    with live.http(2) as http:
        while time.monotonic() < deadline and live.proc.poll() is None:
            try:
                if http.get("/readyz").status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.2)
    tail = live.log.read_text("utf-8", "replace")[-2000:]
    raise RuntimeError(f"tierwise serve ({live.name}) did not start:\n{tail}")


def chat(model: str, *, stream: bool = False, prompt: str = "Hello", **extra: Any) -> dict:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    body["max_tokens"] = 32
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body | extra


def message(model: str, *, stream: bool = False, prompt: str = "Hello", **extra: Any) -> dict:
    body: dict[str, Any] = {"model": model, "max_tokens": 32}
    body["messages"] = [{"role": "user", "content": prompt}]
    if stream:
        body["stream"] = True
    return body | extra


def _api(path: str) -> str:
    return "anthropic" if path.startswith(MESSAGES) else "openai"


def post(
    http: httpx2.Client, path: str, token: str, body: Any, headers: dict[str, str] | None = None
) -> httpx2.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"content-type": "application/json"} | auth(token, _api(path)) | (headers or {})
    return http.post(path, content=content, headers=sent)
