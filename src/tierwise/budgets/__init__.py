"""Gateway budgets and rate limits: per-key limits, atomic reservations, shared stores.

A request is admitted by reserving its worst case (input estimate + capped ``max_tokens`` at
the most expensive candidate's price) against every budget scope of its key, atomically and
idempotently by request id; when it ends, however it ends, the reservation is committed to
what the calls really cost, or released. Stores: memory (one process), SQL (the ledger's
SQLite or PostgreSQL) and Redis (a Lua check-and-reserve); rate limits per minute live in
memory or Redis.

::

    limits.py        Limits (per key and defaults), budget scopes per period, Amount
    store.py         the BudgetStore seam and the in-memory store
    sql.py           SQL store over the ledger's engine (conditional UPDATE, row locks)
    redis_store.py   Redis store and rate limiter (Lua scripts)
    rate.py          the RateLimiter seam, sliding-window maths, the in-memory limiter
    gate.py          the gateway side: estimate, admit, settle, fail-closed / fail-open
"""
