"""Gateway overhead and load, side by side in one run: direct vs tierwise vs LiteLLM's proxy.

Issue 6 §2. On this machine, in one run, with one fake upstream (bench/fake_upstream.py, its
own process: fixed latency, ``--chunks`` SSE chunks when streaming) and one open-loop load
generator (bench/loadgen.py, its own process), for each mode (non-streaming, streaming) and
each rate it drives, in turn:

* **direct** — the generator straight to the upstream (the baseline subtracted);
* **tierwise** — ``tierwise serve --workers N`` (uvloop + httptools, auth on, SQLite ledger
  written behind, admission control);
* **litellm** — LiteLLM's proxy ``litellm --num_workers N`` (installed by the script into its
  own venv, see bench/litellm_proxy.py; master key on, no database, no retries).

All use ``POST /v1/chat/completions`` (OpenAI format, LiteLLM's native API) for the same
model, with usage requested in streams. Printed per row: success rate, latency p50/p95/p99
and the added latency (minus direct at the same rate), for streams also the first-byte
overhead, the server's CPU time per request (all its processes) and its peak RSS (sum of
its processes' high-water marks); then ratios tierwise/LiteLLM. An overload row offers
``--overload-rate`` and counts how the excess was refused (429/503 with ``retry-after``,
resets, timeouts). Usage::

    .venv/bin/python bench/gateway_load.py                      # 50,200,500 RPS x 60 s
    .venv/bin/python bench/gateway_load.py --duration 10 --rates 50,200 --no-litellm
    .venv/bin/python bench/gateway_load.py --smoke              # a few seconds, no LiteLLM

The machine's other load shows in the figures: compare the rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import litellm_proxy
from loadgen import LoadResult, LoadSpec, run_load
from processes import free_port, process, wait_http

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "tw-bench-admin-key"
MODEL = "gpt-4.1-mini"
PROMPT = [{"role": "user", "content": "Say hello in twenty short pieces."}]


@dataclass
class Target:
    name: str
    port: int
    headers: dict[str, str]
    pid: int | None = None
    """The server's root process (None for the upstream seen directly)."""


# --- processes ---------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def _cpu_s(pid: int) -> float:
    total = 0.0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _memory_mb(pid: int, field: str, tree: bool = True) -> float:
    """Sum over the tree (or just ``pid``) of ``VmRSS`` (now) or ``VmHWM`` (peak)."""
    total = 0
    for p in _tree(pid) if tree else [pid]:
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith(f"{field}:"))
    return total / 1024


def _start_upstream(args: argparse.Namespace, tmp: Path) -> tuple[list[str], int]:
    port = free_port()
    script = str(ROOT / "bench" / "fake_upstream.py")
    options = ["--latency-ms", str(args.latency_ms), "--chunks", str(args.chunks)]
    options += ["--chunk-ms", str(args.chunk_ms), "--port", str(port)]
    return [sys.executable, script, *options], port


def _tierwise_config(tmp: Path, upstream_port: int, args: argparse.Namespace) -> Path:
    config = tmp / "tierwise.toml"
    config.write_text(
        f'default_policy = "fixed:openai:{MODEL}"\n'
        "[providers.openai]\n"
        'kind = "openai"\n'
        f'base_url = "http://127.0.0.1:{upstream_port}/v1"\n'
        'api_key = "sk-bench"\n'
        "max_retries = 0\n"
        + (f'http = "{args.upstream_http}"\n' if args.upstream_http else "")
        + "[gateway]\n"
        f"max_in_flight = {args.max_in_flight}\n"
        f"max_loop_lag_ms = {args.max_loop_lag_ms}\n"
        f"max_accept_queue = {args.max_accept_queue}\n"
        + "".join(f"{line}\n" for line in args.gateway_toml)
    )
    return config


def _tierwise_command(tmp: Path, config: Path, port: int, workers: int) -> list[str]:
    ledger = f"sqlite:///{tmp / 'ledger.db'}"
    tierwise = str(Path(sys.executable).parent / "tierwise")
    serve = ["serve", "--port", str(port), "--workers", str(workers)]
    return [tierwise, "--config", str(config), "--ledger", ledger, *serve]


# --- measuring ---------------------------------------------------------------------------


@dataclass
class Row:
    target: str
    result: LoadResult
    cpu_ms: float | None
    peak_mb: float | None


def _body(stream: bool) -> dict[str, object]:
    body: dict[str, object] = {"model": MODEL, "messages": PROMPT, "max_tokens": 64}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def _measure(
    pool: ProcessPoolExecutor, target: Target, stream: bool, rate: float, duration: float
) -> Row:
    spec = LoadSpec(
        "127.0.0.1",
        target.port,
        "/v1/chat/completions",
        target.headers,
        _body(stream),
        rate,
        duration,
        done_marker=b"[DONE]" if stream else b"",
    )
    cpu = _cpu_s(target.pid) if target.pid else 0.0
    result = pool.submit(run_load, spec).result()
    cpu_ms = (_cpu_s(target.pid) - cpu) * 1000 / max(1, result.sent) if target.pid else None
    peak = _memory_mb(target.pid, "VmHWM") if target.pid else None
    if target.pid:
        _settle(target.pid)
    return Row(target.name, result, cpu_ms, peak)


def _settle(pid: int, idle_share: float = 0.05, limit_s: float = 120) -> None:
    """Wait until the server is idle (it may still be working off requests the generator
    gave up on), so that its leftovers do not load the next row."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = _cpu_s(pid)
        time.sleep(1)
        if _cpu_s(pid) - before < idle_share:
            return


def _pcts(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return (float("nan"),) * 3
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


def _triple(values: tuple[float, ...]) -> str:
    return "/".join(f"{v:7.1f}" for v in values)


def _added(row: Row, direct: Row, first_byte: bool) -> tuple[float, ...]:
    pick = (lambda r: r.result.first_byte_ms) if first_byte else (lambda r: r.result.total_ms)
    mine, base = _pcts(pick(row)), _pcts(pick(direct))
    return tuple(a - b for a, b in zip(mine, base, strict=True))


def _print_rows(rows: list[Row], stream: bool, rate: float) -> None:
    mode = "stream" if stream else "complete"
    print(f"\n{mode} @ {rate:g} RPS")
    direct = rows[0]
    for row in rows:
        res = row.result
        success = res.ok / max(1, res.sent)
        line = f"  {row.target:<9} ok {success:8.3%}  total {_triple(_pcts(res.total_ms))}"
        if row is not direct:
            line += f"  added {_triple(_added(row, direct, False))}"
            if stream:
                line += f"  first-byte added {_triple(_added(row, direct, True))}"
            line += f"  cpu {row.cpu_ms:5.2f} ms/req  peak RSS {row.peak_mb:6.0f} MB"
        if set(res.statuses) - {"200"}:
            line += f"  {dict(res.statuses)}"
        print(line, flush=True)
    _print_ratio(rows, stream)


def _print_ratio(rows: list[Row], stream: bool) -> None:
    by_name = {row.target: row for row in rows}
    tw, ll, direct = by_name.get("tierwise"), by_name.get("litellm"), rows[0]
    if tw is None or ll is None:
        return
    a_tw, a_ll = _added(tw, direct, stream), _added(ll, direct, stream)
    what = "first-byte added" if stream else "added"
    ratios = "/".join(f"{_ratio(a, b):.2f}" for a, b in zip(a_tw, a_ll, strict=True))
    cpu = _ratio(tw.cpu_ms or 0, ll.cpu_ms or 0)
    rss = _ratio(tw.peak_mb or 0, ll.peak_mb or 0)
    ok = _ratio(tw.result.ok / max(1, tw.result.sent), ll.result.ok / max(1, ll.result.sent))
    print(
        f"  tierwise/litellm: {what} p50/p95/p99 {ratios}; success {ok:.2f}; "
        f"cpu {cpu:.2f}; peak RSS {rss:.2f}"
    )


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def _overload(pool: ProcessPoolExecutor, targets: list[Target], args: argparse.Namespace) -> None:
    rate, duration = args.overload_rate, args.overload_duration
    print(f"\noverload: {rate:g} RPS offered for {duration:g} s (non-streaming)")
    for target in targets[1:]:
        row = _measure(pool, target, False, rate, duration)
        res = row.result
        refused = sum(n for k, n in res.statuses.items() if k in ("429", "503"))
        served = res.ok / max(0.001, res.wall_s)
        bad = {k: n for k, n in res.statuses.items() if k not in ("200", "429", "503")}
        print(
            f"  {target.name:<9} served {res.ok} ({served:.0f}/s), refused {refused} "
            f"({res.retry_after} with retry-after), other failures {bad or 'none'}; "
            f"served p99 {_pcts(res.total_ms)[2]:.0f} ms",
            flush=True,
        )


# --- main --------------------------------------------------------------------------------


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    rates = lambda s: [float(r) for r in s.split(",")]  # noqa: E731
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per row")
    parser.add_argument("--rates", type=rates, default=[50.0, 200.0, 500.0])
    parser.add_argument("--modes", default="complete,stream")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-ms", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2, help="server processes, both servers")
    parser.add_argument("--max-in-flight", type=int, default=256, help="tierwise, per process")
    parser.add_argument("--max-loop-lag-ms", type=float, default=100.0, help="tierwise")
    parser.add_argument(
        "--max-accept-queue", type=int, default=64, help="tierwise; 0: no accept-queue limit"
    )
    parser.add_argument("--overload-rate", type=float, default=0.0, help="0: no overload row")
    parser.add_argument(
        "--overload-duration",
        type=float,
        help="seconds of the overload row (default: --duration); past a minute at 4000 RPS "
        "the load generator runs out of file descriptors on this machine",
    )
    parser.add_argument(
        "--gateway-toml",
        action="append",
        default=[],
        help='a line for tierwise\'s [gateway] table, e.g. "journal = false"; repeatable',
    )
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument(
        "--upstream-http", choices=["sdk", "direct"], help="tierwise's upstream client"
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds, no LiteLLM")
    args = parser.parse_args()
    if args.smoke:
        args.duration, args.rates, args.no_litellm = 2.0, [20.0], True
        args.workers, args.overload_rate = 1, 0.0
    if args.overload_duration is None:
        args.overload_duration = args.duration
    return args


def main() -> None:
    args = _parse()
    exe = None if args.no_litellm else litellm_proxy.ensure_installed()
    with tempfile.TemporaryDirectory() as name, _servers(args, Path(name), exe) as targets:
        _warm_up(targets)
        context = get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            for row in _idle_rss(targets):
                print(row)
            for mode in args.modes.split(","):
                for rate in args.rates:
                    rows = [
                        _measure(pool, t, mode == "stream", rate, args.duration) for t in targets
                    ]
                    _print_rows(rows, mode == "stream", rate)
            if args.overload_rate:
                _overload(pool, targets, args)


def _idle_rss(targets: list[Target]) -> Iterator[str]:
    for target in targets[1:]:
        assert target.pid is not None
        each = [_memory_mb(p, "VmRSS", tree=False) for p in _tree(target.pid)]
        parts = " + ".join(f"{mb:.0f}" for mb in each)
        yield f"{target.name}: idle RSS {sum(each):.0f} MB ({len(each)} processes: {parts})"


def _warm_up(targets: list[Target]) -> None:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        for target in targets:
            for stream in (False, True):
                _measure(pool, target, stream, 20, 1)


@contextmanager
def _servers(args: argparse.Namespace, tmp: Path, exe: Path | None) -> Iterator[list[Target]]:
    env = {**os.environ, "TIERWISE_ADMIN_KEY": ADMIN_KEY}
    up_cmd, up_port = _start_upstream(args, tmp)
    tw_port, ll_port = free_port(), free_port()
    tw_cmd = _tierwise_command(tmp, _tierwise_config(tmp, up_port, args), tw_port, args.workers)
    with (
        process(up_cmd, env, tmp / "upstream.log"),
        process(tw_cmd, env, tmp / "tierwise.log") as tierwise,
    ):
        targets = [
            Target("direct", up_port, {"authorization": "Bearer sk-bench"}),
            Target("tierwise", tw_port, {"authorization": f"Bearer {ADMIN_KEY}"}, tierwise.pid),
        ]
        wait_http(tw_port, "/healthz")
        if exe is None:
            yield targets
            return
        config = litellm_proxy.write_config(
            tmp / "litellm.yaml", f"http://127.0.0.1:{up_port}", [MODEL]
        )
        ll_cmd = litellm_proxy.command(exe, config, ll_port, args.workers)
        with process(ll_cmd, litellm_proxy.environment(), tmp / "litellm.log") as litellm:
            wait_http(ll_port, "/health/liveliness", 300)
            auth = {"authorization": f"Bearer {litellm_proxy.MASTER_KEY}"}
            yield [*targets, Target("litellm", ll_port, auth, litellm.pid)]


if __name__ == "__main__":
    main()
