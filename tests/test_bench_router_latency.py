"""bench/router_latency.py prints a row for every router in the registry (tiny prompt subset)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.bench_modules import BENCH, load_bench_module
from tierwise.routing.embeddings import minilm_available
from tierwise.routing.registry import ROUTERS


def _load_bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))  # it shares helpers with routing_targets.py
    return load_bench_module("router_latency")


def test_every_router_gets_a_row(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench = _load_bench(monkeypatch)
    tiny = ["--gsm8k", "200", "--mmlu", "50", "--minilm", "5", "--repeat", "1"]
    bench.main(["--data-dir", str(shared_data), "--cache-dir", str(tmp_path), *tiny])
    rows = [line.split(" p50 ")[0].strip() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == "250 prompts (gsm8k 200, mmlu 50)"
    for name in set(ROUTERS) - {"learned"}:
        assert name in rows
    # the learned router is timed only on prompts outside its 160-row train/validation split
    hashing = [row for row in rows if row.startswith("learned/hashing (")]
    assert len(hashing) == 1
    assert 250 - 160 <= int(hashing[0].split("(")[1].rstrip(")")) < 250
    if minilm_available():
        assert {"learned/minilm uncached (5)", "learned/minilm cached (5)"} <= set(rows)
    assert "rules/short" in rows


def test_an_unknown_router_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _load_bench(monkeypatch)
    with pytest.raises(SystemExit):
        bench.main(["--routers", "rules,oracle"])
    assert "unknown router 'oracle' (known: rules," in capsys.readouterr().err


def test_without_sentence_transformers_minilm_is_one_note(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench = _load_bench(monkeypatch)
    monkeypatch.setattr(bench, "minilm_available", lambda: False)
    tiny = ["--gsm8k", "200", "--mmlu", "20", "--repeat", "1", "--routers", "learned"]
    bench.main(["--data-dir", str(shared_data), "--cache-dir", str(tmp_path), *tiny])
    out = capsys.readouterr().out
    assert "learned/hashing (" in out
    assert "skipped: sentence-transformers is not installed" in out
    assert "uncached (" not in out
    assert "rules/short" not in out  # --routers learned: no rules rows
