"""The gateway's settings: the ``[gateway]`` table of the config file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, field_validator

from tierwise.budgets.config import BudgetSettings
from tierwise.budgets.limits import Limits

DEFAULT_PORT = 8787
MIB = 1024 * 1024


class GatewayConfig(BaseModel):
    """How ``tierwise serve`` listens and what it accepts.

    The admin key is not here but at the top level (``admin_key``, env
    ``TIERWISE_ADMIN_KEY``), so that it is never written next to the rest in a shared file.
    """

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    auth: bool = True
    """Require an API key on every model endpoint (``/healthz`` and ``/readyz`` stay open)."""
    max_body_bytes: int = Field(default=32 * MIB, gt=0)
    """Largest request body accepted (Anthropic's own limit is 32 MB); larger is a 413, at
    once for a declared ``Content-Length``, as it arrives for a chunked body."""
    max_json_depth: int = Field(default=64, ge=1, le=256)
    """Deepest nesting of objects and arrays a request body may have (the body is level 1;
    a Claude Code body with its tool schemas reaches about 10); deeper is a 400. At most 256:
    far below the depth where Python's own recursion limit would stop the parser."""
    default_output_limit: int = Field(default=128_000, ge=1)
    """The most ``max_tokens`` a request may ask of a model whose catalog entry gives no
    ``max_output_tokens`` (a model's own limit bounds it otherwise; past it, a 400)."""
    key_cache_s: float = Field(default=10.0, ge=0)
    """How long a verified key is trusted without asking the database again (revocation lag)."""
    metrics: bool = True
    """Serve Prometheus metrics at ``/metrics`` (behind the admin key when auth is on)."""
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    """Addresses or CIDR networks of the reverse proxies in front of the gateway: only from
    these is ``X-Forwarded-For`` (the client's address) and ``X-Forwarded-Proto`` believed
    (see :mod:`tierwise.gateway.clients`); empty: the connecting peer is the client."""
    auth_failures: int = Field(default=10, ge=1)
    """Failed key checks (dashboard sign-ins, wrong bearer or ``x-api-key`` keys on any
    endpoint) an address may make per ``auth_failure_window_s``; then a 429 with
    ``retry-after``, even with the right key, until the oldest leaves the window. Counted per
    process, and also together in Redis when ``rate_limit_store`` is there (else with
    ``workers = N``, up to N times as many)."""
    auth_failure_window_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    cookie_secure: bool | Literal["auto"] = "auto"
    """The dashboard session cookie's ``Secure`` flag: ``auto`` when the request is https (as
    the gateway sees it, or a trusted proxy's ``X-Forwarded-Proto`` says), or always / never."""
    budget_store: str = Field(
        default="ledger",
        pattern=r"^(ledger|memory|(sqlite|postgresql|postgres)(\+\w+)?:.+|(redis|rediss|unix)://.+)$",
    )
    """Budgets: ``ledger`` (its database), ``memory``, a SQL URL or ``redis://``; several
    instances share PostgreSQL or Redis (see :mod:`tierwise.budgets.factory`)."""
    rate_limit_store: str | None = Field(
        default=None, pattern=r"^(memory|(redis|rediss|unix)://.+)$"
    )
    """Per-minute limits: ``memory`` or ``redis://``; unset, Redis when budgets are in Redis."""
    limits: Limits = Field(default_factory=Limits)
    """``[gateway.limits]``: every key's limits unless the key sets its own."""
    budgets: BudgetSettings = Field(default_factory=BudgetSettings)
    """``[gateway.budgets]``: fail-open, reservation TTL, ``max_tokens`` default, margin."""
    max_in_flight: int = Field(default=256, ge=1)
    """Model requests served at once per process; past it a 503 with ``retry-after`` at once,
    rather than queueing into client timeouts."""
    max_loop_lag_ms: float = Field(default=100.0, ge=0)
    """Also refuse (503) while the event loop runs this late on average (the CPU is saturated
    and requests queue before they are even read); 0 turns this off."""
    max_accept_queue: int = Field(default=64, ge=0)
    """Also refuse (503) while more than this many new connections wait on the listening
    socket for a worker to accept them (Linux): a request taken from a longer queue has
    waited too long already, and refusing drains the queue; 0 turns this off."""
    gc_freeze: bool = True
    """After start-up, collect once and freeze the heap (``gc.freeze``): the collector's full
    passes then skip the long-lived objects (100+ ms pauses otherwise; see
    :mod:`tierwise.gateway.gc_tuning`)."""
    gc_gen0_threshold: int = Field(default=10_000, ge=0)
    """With ``gc_freeze``: the youngest generation's collection threshold (Python's default
    700); 0 leaves it as it is."""
    busy_retry_after_s: int = Field(default=1, ge=1)
    """The ``retry-after`` sent with that 503."""
    write_behind: bool = True
    """Write ledger records in batches off the request path (flushed on shutdown; buffered and
    retried while the database is down). Off: each record is written before going on."""
    ledger_close_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    """With ``write_behind``: how long shutdown keeps writing queued records (retrying while
    the database is down) before spilling the rest to ``ledger_spill_dir``; a bound on the
    whole close."""
    journal: bool = True
    """With ``write_behind``: append each request's records to a local journal file and fsync
    it (one fsync for every request waiting, group commit) before the answer's last bytes go
    out; the journals of a process that died (``kill -9``, a crash) are replayed into the
    ledger at the next start, so nothing answered is lost. Off: records wait in memory only."""
    journal_dir: Path | None = None
    """Where each process keeps its journal files; default the top-level ``ledger_spill_dir``.
    A folder that cannot be written fails the start."""
    journal_fsync: bool = True
    """With ``journal``: the answer waits for the fsync of its records, so that they survive
    the machine losing power too. Off: it waits for their write only, which survives the
    process being killed; the fsync follows at once, unwaited."""
    journal_sync_ms: float = Field(default=0.0, ge=0, le=1000, allow_inf_nan=False)
    """How long the journal waits after a request's records before fsyncing, for more to
    share the fsync; 0: at once (requests arriving during one fsync share the next)."""
    journal_segment_bytes: int = Field(default=4 * MIB, ge=64 * 1024)
    """A journal file moves on to a new one past this size; a file whose records are all in
    the ledger is then deleted."""
    idempotency: str = Field(
        default="memory", pattern=r"^(memory|ledger|off|(redis|rediss|unix)://.+)$"
    )
    """Where ``Idempotency-Key`` results are kept: ``memory`` (this process), ``ledger`` (the
    ledger database) or a ``redis://`` URL (both shared by instances), or ``off``."""
    idempotency_ttl_s: float = Field(default=24 * 3600, gt=0)
    """How long a stored result answers a retry with the same key."""
    stream_keepalive_s: float = Field(default=15.0, ge=0, allow_inf_nan=False)
    """A stream that says nothing this long gets an SSE comment (``: ping``), so that proxies
    cutting idle connections keep it open (a long advisor consult, a model thinking); 0: none."""
    header_timeout_s: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    """A request line and headers must arrive within this, counted from the connection's
    opening or from the first byte of a kept-alive connection's next request; otherwise the
    connection is closed (slowloris)."""
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    """Largest request line and headers accepted (httptools has no limit of its own); larger
    is a 431 and the connection closed."""
    keepalive_timeout_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    """A kept-alive connection idle this long after an answer is closed."""
    body_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    """A request body must finish arriving within this of its headers; otherwise a 408 in the
    API's envelope, the connection closed and the request ended (its slot freed)."""
    stream_send_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    """A client that reads nothing this long while an answer waits to be sent (a stream, or a
    large body) is cut: a stream ends as one whose client hung up (upstream closed, the call
    recorded with its cost unknown, the reservation settled, the slot freed)."""
    drain_s: float = Field(default=30.0, ge=0)
    """On SIGTERM: how long requests in flight (streams too) may take to finish while new ones
    get a 503 and ``/readyz`` says draining; then the server closes."""
    workers: int = Field(default=1, ge=1)
    """Processes ``tierwise serve`` runs, sharing the port (each with its own limits)."""

    @field_validator(
        "ledger_close_timeout_s",
        "header_timeout_s",
        "keepalive_timeout_s",
        "body_timeout_s",
        "stream_send_timeout_s",
        "auth_failure_window_s",
        mode="before",
    )
    @classmethod
    def _seconds_not_a_flag(cls, value: object) -> object:
        if isinstance(value, bool):  # a number otherwise (true would be 1 s)
            raise ValueError("a number of seconds, not true or false")
        return value
