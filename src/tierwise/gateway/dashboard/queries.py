"""What the dashboard shows, read from the ledger with SQLAlchemy Core (SQLite and PostgreSQL).

Synchronous, like the ledger: the views call these through ``asyncio.to_thread``. Counts,
filters, joins and pagination run in SQL; money is summed in Python over the few columns it
needs, because SQLite stores ``Decimal`` dollars as text and its ``SUM`` would round through a
float. Time buckets are UTC hours or days, computed in Python for the same portability.

As in :mod:`tierwise.ledger.report`, a call of unknown cost is counted but adds nothing to any
dollar figure nor to the all-strongest-model counterfactual.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from sqlalchemy import ColumnElement, RowMapping, Select, distinct, func, or_, select

from tierwise.catalog import Catalog, ModelSpec
from tierwise.cost import price_tokens
from tierwise.errors import LedgerError
from tierwise.ledger.schema import (
    as_utc,
    calls,
    consults,
    decisions,
    escalations,
    outcomes,
    tasks,
)
from tierwise.ledger.store import Ledger
from tierwise.messages import TokenCounts

Bucket = Literal["hour", "day"]
K = TypeVar("K")
MAX_DAYS = 366
HOURLY_UP_TO_DAYS = 2
"""Windows of up to this many days are bucketed by hour, longer ones by day."""
PAGE_SIZE = 25
FLUSH_TIMEOUT_S = 2.0
"""How long a read waits for the gateway's write-behind queue to reach the database."""
MAX_QUERY_CHARS = 200
ADVISOR_ITERATION = "advisor_message"
FAILOVER_TRIGGER = "failover:"
"""How the failover layer's escalations begin: a move to another upstream, not a climb."""
_TOKEN_AXES = (
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
)


class Line(BaseModel):
    """Calls, tokens and known cost of one group of calls."""

    name: str
    calls: int = 0
    unknown_cost_calls: int = 0
    cost_usd: Decimal = Decimal(0)
    tokens: TokenCounts = TokenCounts()


class OverTime(BaseModel):
    """Spend per time bucket, stacked by model, and the running totals against the
    all-strongest counterfactual (``None`` where it cannot be priced)."""

    bucket: Bucket
    starts: list[datetime]
    cost_by_model: dict[str, list[Decimal]]
    calls: list[int]
    cumulative_cost_usd: list[Decimal]
    cumulative_counterfactual_usd: list[Decimal] | None


class Rates(BaseModel):
    """Shares of the top-level tasks (``None`` with no task) that escalated (a cascade or a
    workflow climbing to a stronger model), failed over to another upstream, or consulted
    an advisor; a sub-task's counts for its parent."""

    tasks: int
    escalated_tasks: int
    escalation_rate: float | None
    failed_over_tasks: int
    failover_rate: float | None
    advisor_tasks: int
    advisor_consult_rate: float | None
    consults: int
    """Advisor consults recorded (a task may consult more than once)."""


class Escalation(BaseModel):
    to_model: str
    trigger: str


class Savings(BaseModel):
    """The known-cost calls against the same tokens on the strongest model."""

    strongest_model: str | None
    cost_usd: Decimal
    counterfactual_cost_usd: Decimal | None
    savings_usd: Decimal | None
    savings_pct: Decimal | None


class Summary(BaseModel):
    """Everything the dashboard's charts and tiles show for one time window."""

    since: datetime
    until: datetime
    calls: int
    unknown_cost_calls: int
    cost_usd: Decimal
    tokens: TokenCounts
    by_model: list[Line]
    by_role: list[Line]
    decisions_by_model: dict[str, int]
    """How often routers chose each model (the routed model distribution)."""
    over_time: OverTime
    rates: Rates
    savings: Savings


class DecisionRow(BaseModel):
    """One routing decision with its task's policy, outcome, escalations and cost."""

    id: str
    created_at: datetime
    task_id: str
    policy: str | None
    source: str | None
    router: str
    chosen_model: str
    reason: str
    threshold: float | None
    candidates: list[dict[str, Any]]
    escalations: list[Escalation]
    outcome: str | None
    task_calls: int
    """Model calls of the task and its sub-tasks."""
    task_cost_usd: Decimal | None
    """Their cost; ``None`` when one of them costs unknown."""


class DecisionPage(BaseModel):
    """One page of decisions, newest first, matching ``q``."""

    q: str
    page: int
    per_page: int
    total: int
    pages: int
    rows: list[DecisionRow]


def _settled(ledger: Ledger) -> None:
    """Let queued write-behind records land first; past the timeout (a slow or unreachable
    database) the dashboard shows what is written, and a real outage fails the read itself."""
    with suppress(LedgerError):
        ledger.flush(FLUSH_TIMEOUT_S)


# --- the summary ----------------------------------------------------------------------------


def window(days: int, now: datetime) -> tuple[datetime, datetime, Bucket]:
    """``(since, until, bucket)``: the last ``days`` days, aligned to whole buckets."""
    bucket: Bucket = "hour" if days <= HOURLY_UP_TO_DAYS else "day"
    until = as_utc(now)
    since = bucket_start(until - timedelta(days=days), bucket) + _step(bucket)
    return since, until, bucket


def bucket_start(moment: datetime, bucket: Bucket) -> datetime:
    moment = as_utc(moment).replace(minute=0, second=0, microsecond=0)
    return moment if bucket == "hour" else moment.replace(hour=0)


def _step(bucket: Bucket) -> timedelta:
    return timedelta(hours=1) if bucket == "hour" else timedelta(days=1)


Tokens = tuple[int, int, int, int, int]
"""Counts on the axes of ``_TOKEN_AXES``, in that order."""
_NO_TOKENS: Tokens = (0, 0, 0, 0, 0)


def _add(a: Tokens, b: Tokens) -> Tokens:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4])


def _counts(tokens: Tokens) -> TokenCounts:
    return TokenCounts(**dict(zip(_TOKEN_AXES, tokens, strict=True)))


@dataclass(frozen=True)
class _Part:
    """One call, or the share of it one role ran: its cost (``None``: unknown) and tokens."""

    cost: Decimal | None
    tokens: Tokens

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> _Part:
        i, o, w5, w1, r = (int(row.get(axis) or 0) for axis in _TOKEN_AXES)
        return cls(row["cost_usd"], (i, o, w5, w1, r))

    def minus(self, other: _Part) -> _Part:
        cost = None if self.cost is None or other.cost is None else self.cost - other.cost
        a, b = self.tokens, other.tokens
        return _Part(cost, (a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3], a[4] - b[4]))


@dataclass
class _Tally:
    """Running sums for one group of calls."""

    calls: int = 0
    unknown: int = 0
    cost: Decimal = Decimal(0)
    tokens: Tokens = _NO_TOKENS
    known_tokens: Tokens = _NO_TOKENS
    """The tokens of the calls of known cost (the counterfactual reprices only those)."""

    def add(self, part: _Part) -> None:
        self.calls += 1
        self.tokens = _add(self.tokens, part.tokens)
        if part.cost is None:
            self.unknown += 1
        else:
            self.cost += part.cost
            self.known_tokens = _add(self.known_tokens, part.tokens)

    def merge(self, other: _Tally) -> None:
        self.calls += other.calls
        self.unknown += other.unknown
        self.cost += other.cost
        self.tokens = _add(self.tokens, other.tokens)
        self.known_tokens = _add(self.known_tokens, other.known_tokens)

    def line(self, name: str) -> Line:
        return Line(
            name=name,
            calls=self.calls,
            unknown_cost_calls=self.unknown,
            cost_usd=self.cost,
            tokens=_counts(self.tokens),
        )

    def counterfactual(self, spec: ModelSpec | None) -> Decimal | None:
        """The known-cost calls' tokens at ``spec``'s prices (pricing is linear per axis)."""
        if spec is None:
            return None
        priced = price_tokens(_counts(self.known_tokens), spec.prices)
        return None if priced is None else priced.total


def _merged(tallies: Iterable[tuple[K, _Tally]]) -> dict[K, _Tally]:
    merged: dict[K, _Tally] = {}
    for key, tally in tallies:
        merged.setdefault(key, _Tally()).merge(tally)
    return merged


@dataclass
class _Calls:
    """The window's calls tallied per (bucket, model) and per role in one pass; totals, the
    per-model and the per-bucket lines are merged from the (few) groups afterwards."""

    groups: defaultdict[tuple[datetime, str], _Tally] = field(
        default_factory=lambda: defaultdict(_Tally)
    )
    by_role: defaultdict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    advisor_tasks: set[str] = field(default_factory=set)

    def add(self, row: RowMapping, bucket: Bucket, catalog: Catalog) -> None:
        whole = _Part.of(row)
        self.groups[bucket_start(row["created_at"], bucket), row["model"]].add(whole)
        for role, part in _role_parts(row, whole, catalog):
            self.by_role[role].add(part)
        if row["role"] == "advisor" or _advisor_iterations(row):
            self.advisor_tasks.add(row["parent_id"] or row["task_id"])

    def total(self) -> _Tally:
        return _merged((None, tally) for tally in self.groups.values()).get(None, _Tally())

    def by_model(self) -> dict[str, _Tally]:
        return _merged((model, tally) for (_, model), tally in self.groups.items())

    def by_bucket(self) -> dict[datetime, _Tally]:
        return _merged((start, tally) for (start, _), tally in self.groups.items())


def _advisor_iterations(row: RowMapping) -> list[Mapping[str, Any]]:
    """The advisor's sub-inferences in a call whose upstream ran the advisor tool."""
    iterations: Iterable[Mapping[str, Any]] = row["iterations"] or ()
    return [it for it in iterations if it.get("kind") == ADVISOR_ITERATION]


def _role_parts(row: RowMapping, whole: _Part, catalog: Catalog) -> list[tuple[str, _Part]]:
    """A call split by role: a native advisor tool's sub-inferences, each priced at its own
    model's prices, are the advisor's share (a call of its own in the role's count); the
    rest stays with the call's role. Unpriceable iterations leave the call whole."""
    advised = _advisor_iterations(row) if row["role"] != "advisor" else []
    if not advised or whole.cost is None:
        return [(row["role"], whole)]
    cost, tokens = Decimal(0), _NO_TOKENS
    for iteration in advised:
        spec = catalog.find_upstream(row["provider"], str(iteration.get("model") or ""))
        share = _Part.of({**iteration, "cost_usd": None})
        priced = None if spec is None else price_tokens(_counts(share.tokens), spec.prices)
        if priced is None:
            return [(row["role"], whole)]
        cost += priced.total
        tokens = _add(tokens, share.tokens)
    advisor = _Part(cost, tokens)
    return [(row["role"], whole.minus(advisor)), ("advisor", advisor)]


_CALL_COLUMNS = (
    calls.c.created_at,
    calls.c.task_id,
    calls.c.parent_id,
    calls.c.role,
    calls.c.provider,
    calls.c.model,
    calls.c.cost_usd,
    calls.c.iterations,
    *(calls.c[axis] for axis in _TOKEN_AXES),
)


def summary(ledger: Ledger, catalog: Catalog, days: int, now: datetime | None = None) -> Summary:
    """Spend, distribution, rates and savings over the last ``days`` days."""
    since, until, bucket = window(days, now or datetime.now(UTC))
    tally = _Calls()
    strongest = catalog.strongest()
    stmt = select(*_CALL_COLUMNS).where(calls.c.created_at >= since)
    _settled(ledger)
    with ledger.transaction("could not read the ledger") as conn:
        for row in conn.execute(stmt).mappings():
            tally.add(row, bucket, catalog)
        task_count = _scalar(conn, _count_tasks(since))
        escalated = _scalar(conn, _escalated_tasks(since, failover=False))
        failed_over = _scalar(conn, _escalated_tasks(since, failover=True))
        chosen = conn.execute(_decisions_by_model(since)).all()
        consulted = {root for (root,) in conn.execute(_consulting_tasks(since))}
        consult_count = _scalar(conn, _count_consults(since))
    advised = len(tally.advisor_tasks | consulted)
    total, by_model = tally.total(), tally.by_model()
    return Summary(
        since=since,
        until=until,
        calls=total.calls,
        unknown_cost_calls=total.unknown,
        cost_usd=total.cost,
        tokens=_counts(total.tokens),
        by_model=_lines(by_model),
        by_role=_lines(tally.by_role),
        decisions_by_model={str(model): int(n) for model, n in chosen},
        over_time=_over_time(tally, since, until, bucket, strongest),
        rates=_rates(task_count, escalated, failed_over, advised, consult_count),
        savings=_savings(total, strongest),
    )


def _scalar(conn: Any, stmt: Select[Any]) -> int:
    return int(conn.execute(stmt).scalar_one() or 0)


def _count_tasks(since: datetime) -> Select[Any]:
    top_level = tasks.c.parent_id.is_(None)
    return select(func.count()).select_from(tasks).where(tasks.c.created_at >= since, top_level)


def _escalated_tasks(since: datetime, *, failover: bool) -> Select[Any]:
    """How many top-level tasks escalated (or, with ``failover``, failed over) since then."""
    is_failover = escalations.c.trigger.startswith(FAILOVER_TRIGGER, autoescape=True)
    root = func.coalesce(tasks.c.parent_id, escalations.c.task_id)
    joined = escalations.outerjoin(tasks, tasks.c.id == escalations.c.task_id)
    kind = is_failover if failover else ~is_failover
    return (
        select(func.count(distinct(root)))
        .select_from(joined)
        .where(escalations.c.created_at >= since, kind)
    )


def _consulting_tasks(since: datetime) -> Select[Any]:
    """The top-level tasks with a consult record since then."""
    root = func.coalesce(tasks.c.parent_id, consults.c.task_id)
    joined = consults.outerjoin(tasks, tasks.c.id == consults.c.task_id)
    return select(root).select_from(joined).where(consults.c.created_at >= since).distinct()


def _count_consults(since: datetime) -> Select[Any]:
    return select(func.count()).select_from(consults).where(consults.c.created_at >= since)


def _decisions_by_model(since: datetime) -> Select[Any]:
    count = func.count().label("n")
    return (
        select(decisions.c.chosen_model, count)
        .where(decisions.c.created_at >= since)
        .group_by(decisions.c.chosen_model)
        .order_by(count.desc(), decisions.c.chosen_model)
    )


def _lines(groups: Mapping[str, _Tally]) -> list[Line]:
    """Lines by descending cost, then calls, then name."""
    lines = [tally.line(name) for name, tally in groups.items()]
    return sorted(lines, key=lambda line: (-line.cost_usd, -line.calls, line.name))


def _over_time(
    tally: _Calls, since: datetime, until: datetime, bucket: Bucket, strongest: ModelSpec | None
) -> OverTime:
    starts: list[datetime] = []
    moment = since
    while moment <= until:
        starts.append(moment)
        moment += _step(bucket)
    models = [line.name for line in _lines(tally.by_model())]
    by_bucket = tally.by_bucket()
    cumulative, running = [], Decimal(0)
    counterfactual: list[Decimal] | None = []
    imagined = Decimal(0)
    for start in starts:
        part = by_bucket.get(start, _Tally())
        running += part.cost
        cumulative.append(running)
        priced = part.counterfactual(strongest)
        if priced is None or counterfactual is None:
            counterfactual = None
            continue
        imagined += priced
        counterfactual.append(imagined)
    empty = _Tally()
    return OverTime(
        bucket=bucket,
        starts=starts,
        cost_by_model={
            model: [tally.groups.get((s, model), empty).cost for s in starts] for model in models
        },
        calls=[by_bucket.get(s, empty).calls for s in starts],
        cumulative_cost_usd=cumulative,
        cumulative_counterfactual_usd=counterfactual,
    )


def _rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else min(part / whole, 1.0)


def _rates(
    task_count: int, escalated: int, failed_over: int, advised: int, consult_count: int
) -> Rates:
    return Rates(
        tasks=task_count,
        escalated_tasks=escalated,
        escalation_rate=_rate(escalated, task_count),
        failed_over_tasks=failed_over,
        failover_rate=_rate(failed_over, task_count),
        advisor_tasks=advised,
        advisor_consult_rate=_rate(advised, task_count),
        consults=consult_count,
    )


def _savings(total: _Tally, strongest: ModelSpec | None) -> Savings:
    counterfactual = total.counterfactual(strongest)
    saved = None if counterfactual is None else counterfactual - total.cost
    percent = None if saved is None or not counterfactual else saved / counterfactual * 100
    return Savings(
        strongest_model=None if strongest is None else strongest.id,
        cost_usd=total.cost,
        counterfactual_cost_usd=counterfactual,
        savings_usd=saved,
        savings_pct=percent,
    )


# --- the decisions table --------------------------------------------------------------------


def _matches(q: str) -> ColumnElement[bool]:
    """Case-insensitive substring match of ``q`` (``%`` and ``_`` taken literally)."""
    needle = q.lower()
    columns = (
        decisions.c.reason,
        decisions.c.chosen_model,
        decisions.c.router,
        decisions.c.task_id,
        tasks.c.policy,
    )
    return or_(*(func.lower(col).contains(needle, autoescape=True) for col in columns))


def decision_page(ledger: Ledger, q: str = "", page: int = 1) -> DecisionPage:
    """Decisions newest first, ``PAGE_SIZE`` a page, filtered by ``q`` (reason, model,
    router, task id or policy)."""
    q = q.strip()[:MAX_QUERY_CHARS]
    joined = decisions.outerjoin(tasks, tasks.c.id == decisions.c.task_id)
    where = _matches(q) if q else None
    count = select(func.count()).select_from(joined)
    stmt = select(
        decisions.c.id,
        decisions.c.created_at,
        decisions.c.task_id,
        decisions.c.router,
        decisions.c.chosen_model,
        decisions.c.reason,
        decisions.c.threshold,
        decisions.c.candidates,
        tasks.c.policy,
        tasks.c.source,
    ).select_from(joined)
    if where is not None:
        count, stmt = count.where(where), stmt.where(where)
    _settled(ledger)
    with ledger.transaction("could not read the ledger") as conn:
        total = _scalar(conn, count)
        pages = max(1, -(-total // PAGE_SIZE))
        page = min(max(page, 1), pages)
        ordered = stmt.order_by(decisions.c.created_at.desc(), decisions.c.seq.desc())
        rows = conn.execute(ordered.limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)).mappings()
        found = [dict(row) for row in rows]
        task_ids = sorted({row["task_id"] for row in found})
        extras = _task_extras(conn, task_ids)
    return DecisionPage(
        q=q,
        page=page,
        per_page=PAGE_SIZE,
        total=total,
        pages=pages,
        rows=[_decision_row(row, extras) for row in found],
    )


@dataclass
class _TaskExtras:
    escalations: defaultdict[str, list[Escalation]] = field(
        default_factory=lambda: defaultdict(list)
    )
    outcome: dict[str, str] = field(default_factory=dict)
    cost: dict[str, Decimal | None] = field(default_factory=dict)
    calls: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))


def _task_extras(conn: Any, task_ids: Sequence[str]) -> _TaskExtras:
    """Escalations, outcome and total cost of each of ``task_ids`` (sub-tasks' calls too)."""
    extras = _TaskExtras()
    if not task_ids:
        return extras
    escalated = select(escalations.c.task_id, escalations.c.to_model, escalations.c.trigger).where(
        escalations.c.task_id.in_(task_ids)
    )
    for task_id, to_model, trigger in conn.execute(escalated.order_by(escalations.c.seq)):
        extras.escalations[task_id].append(Escalation(to_model=to_model, trigger=trigger))
    ended = select(outcomes.c.task_id, outcomes.c.outcome).where(outcomes.c.task_id.in_(task_ids))
    for task_id, outcome in conn.execute(ended.order_by(outcomes.c.seq)):
        extras.outcome[task_id] = outcome
    owner = func.coalesce(calls.c.parent_id, calls.c.task_id)
    costs = select(calls.c.task_id, calls.c.parent_id, calls.c.cost_usd).where(
        or_(calls.c.task_id.in_(task_ids), owner.in_(task_ids))
    )
    for task_id, parent_id, cost in conn.execute(costs):
        root = task_id if task_id in task_ids else parent_id
        extras.calls[root] += 1
        so_far = extras.cost.get(root, Decimal(0))
        extras.cost[root] = None if so_far is None or cost is None else so_far + cost
    return extras


def _decision_row(row: Mapping[str, Any], extras: _TaskExtras) -> DecisionRow:
    task_id = row["task_id"]
    return DecisionRow(
        id=row["id"],
        created_at=as_utc(row["created_at"]),
        task_id=task_id,
        policy=row["policy"],
        source=row["source"],
        router=row["router"],
        chosen_model=row["chosen_model"],
        reason=row["reason"],
        threshold=row["threshold"],
        candidates=list(row["candidates"] or []),
        escalations=extras.escalations.get(task_id, []),
        outcome=extras.outcome.get(task_id),
        task_calls=extras.calls.get(task_id, 0),
        task_cost_usd=extras.cost.get(task_id, Decimal(0)),
    )
