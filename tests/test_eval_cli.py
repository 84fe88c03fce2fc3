"""``tierwise eval`` as a user runs it: real processes, real data, reports on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tierwise.config import Settings
from tierwise.demo import run_demo
from tierwise.ledger.export import export_traces
from tierwise.ledger.store import Ledger

# Runs the real entry point; adds ``eval`` if main.py does not register it (yet).
ENTRY = """
from tierwise.cli import main
from tierwise.cli.eval_cmd import register
if not any(command.name == "eval" for command in main.app.registered_commands):
    register(main.app)
main.run()
"""


def tierwise(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_eval_gsm8k_sample_writes_json_and_html(shared_data: Path, tmp_path: Path) -> None:
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    result = tierwise(
        "eval", "routellm-gsm8k", "--data-dir", str(shared_data), "--routers", "tfidf,constant",
        "--seeds", "2", "--limit", "200", "--json", str(out_json), "--html", str(out_html),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "APGR" in result.stdout and "confidently wrong" in result.stdout
    report = json.loads(out_json.read_text())
    assert report["dataset"] == "routellm-gsm8k" and report["seeds"] == [0, 1]
    assert report["test_prompts"] == 40  # 20% of the 200 sampled prompts
    by_name = {r["name"]: r for r in report["results"]}
    assert {"tfidf", "constant", "random", "oracle"} <= set(by_name)
    assert by_name["random"]["apgr"]["mean"] == 0.5
    tfidf = by_name["tfidf"]
    assert 0.0 <= tfidf["aiq"]["mean"] <= 1.0 and len(tfidf["curves"]) == 2
    assert (
        by_name["oracle"]["quality"]["mean"]
        > by_name["openai:gpt-4-1106-preview"]["quality"]["mean"]
    )
    page = out_html.read_text()
    assert "<svg" in page and "tfidf" in page and "<table>" in page


async def test_eval_on_exported_demo_traces(
    shared_data: Path, tmp_path: Path, settings: Settings
) -> None:
    await run_demo(settings, data_dir=shared_data, limit=20, embedder="hashing")
    traces = tmp_path / "traces.jsonl"
    with Ledger.open(settings.resolved_ledger_url()) as ledger, traces.open("w") as handle:
        assert export_traces(ledger, handle) == 100  # 20 prompts x 5 demo policies
    out_json = tmp_path / "r.json"
    result = tierwise("eval", str(traces), "--routers", "constant", "--seeds", "2",
                      "--json", str(out_json))  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out_json.read_text())
    assert report["prompts"] == 20
    assert report["strongest"] == "openai:gpt-4-1106-preview"
    assert any("20 prompts labelled for all 2 models" in note for note in report["notes"])


def test_unknown_router_is_one_line_exit_2(shared_data: Path) -> None:
    result = tierwise(
        "eval", "routellm-gsm8k", "--data-dir", str(shared_data), "--routers", "magic"
    )
    assert result.returncode == 2
    assert "unknown scorer 'magic'" in one_line(result)


def test_unreadable_dataset_is_one_line_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "outcomes.csv"
    bad.write_text("question,answer\n1,2\n")
    result = tierwise("eval", str(bad))
    assert result.returncode == 1
    assert "no 'prompt' column" in one_line(result)


def test_empty_split_is_one_line(tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("prompt,cheap,dear\na,True,True\nb,False,True\n")
    result = tierwise("eval", str(tiny), "--routers", "constant", "--seeds", "1")
    assert result.returncode == 1
    assert "empty split" in one_line(result)
