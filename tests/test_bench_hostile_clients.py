"""bench/hostile_clients.py runs against a live gateway and reports every count in one shape."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.bench_modules import BENCH

LINE = re.compile(r"^(?P<name>.+): \$?(?P<value>[0-9.e+-]+)( MB)? \(tried (?P<tried>\d+)\)")


def test_quick_run_prints_integer_counts_and_json() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    env["PYTHONPATH"] = str(Path(__file__).parents[1] / "src")
    command = [sys.executable, str(BENCH / "hostile_clients.py"), "--quick", "--json"]
    command += ["--only", "idempotency,dashboard"]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["failed"] == {}
    counts = report["counts"]
    assert {c["class"] for c in counts} == {"idempotency", "dashboard"}
    for count in counts:
        assert isinstance(count["value"], int)
        assert count["tried"] > 0
        assert count["bad"] == (count["value"] > count["bound"])
    assert report["nonzero"] == [c["name"] for c in counts if c["bad"]]
    lines = [m for line in done.stderr.splitlines() if (m := LINE.match(line))]
    assert [m["name"] for m in lines] == [c["name"] for c in counts]
    assert [int(m["tried"]) for m in lines] == [c["tried"] for c in counts]
    summary = "all counts 0" if not report["nonzero"] else "NON-ZERO"
    assert summary in done.stderr
