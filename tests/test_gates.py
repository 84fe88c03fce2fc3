"""Gates passing and failing: static checks, the command gate in a scratch workspace, and the
gates that ask a model (through the real SDKs against fake upstreams)."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import httpx2
import pytest

from tests.fakes import anthropic_upstream as fa
from tests.fakes import openai_upstream as fo
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tierwise.budget import BudgetGuard, TaskBudget
from tierwise.catalog import Catalog
from tierwise.errors import (
    BudgetExceededError,
    GateError,
    PolicyError,
    ServerError,
    UnknownModelError,
)
from tierwise.gates import (
    Gate,
    GateEnv,
    GateErrorPolicy,
    GateResult,
    accepted,
    build_gate,
    build_gates,
    check_recorded,
    gate_error_policy,
)
from tierwise.gates.command import CommandGate
from tierwise.gates.registry import split_gate_specs
from tierwise.ledger.records import CallRecord, GateRecord, LedgerRecord
from tierwise.messages import Request, Response, TextBlock
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import Provider, ProviderConfig
from tierwise.providers.openai_compat import OpenAICompatProvider
from tierwise.strategies.base import TaskContext

HAIKU = "anthropic:claude-haiku-4-5"
ADD_TEST = "from solution import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
GOOD_ADD = "Here you go:\n\n```python\ndef add(a, b):\n    return a + b\n```\n"
BAD_ADD = "```python\ndef add(a, b):\n    return a - b\n```"


def _answer(text: str, model: str = HAIKU) -> Response:
    return Response(id="msg_1", model=model, content=[TextBlock(text=text)])


def _anthropic(fake: FakeAnthropic) -> AnthropicProvider:
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(fake.handler))
    config = ProviderConfig(kind="anthropic", base_url="http://anthropic.fake")
    return AnthropicProvider("anthropic", config, "sk-test", http_client=client)


def _openai(fake: FakeOpenAI) -> OpenAICompatProvider:
    config = ProviderConfig(kind="openai", base_url="http://openai.fake/v1")
    return OpenAICompatProvider("openai", config, "sk-test", http_client=fake.client())


class Trace:
    """A real task context whose records land in a list."""

    def __init__(self, catalog: Catalog, providers: Mapping[str, Provider] | None = None) -> None:
        self.records: list[LedgerRecord] = []
        known = dict(providers or {})
        self.task = TaskContext(
            "task-gates",
            catalog=catalog,
            provider_for=lambda spec: known[spec.provider],
            record=self._keep,
        )

    async def _keep(self, record: LedgerRecord) -> None:
        self.records.append(record)

    @property
    def calls(self) -> list[CallRecord]:
        return [r for r in self.records if isinstance(r, CallRecord)]


async def _check(
    gate: Gate, text: str, catalog: Catalog, request: Request | None = None
) -> GateResult:
    asked = request or Request.from_prompt("Write add(a, b).")
    return await gate.check(asked, _answer(text), Trace(catalog).task)


# --- static gates ------------------------------------------------------------------------------


async def test_python_gate_parses_code_blocks_or_the_whole_text(catalog: Catalog) -> None:
    gate = build_gate("python", GateEnv(catalog))
    assert (await _check(gate, GOOD_ADD, catalog)).passed
    assert (await _check(gate, "def add(a, b):\n    return a + b\n", catalog)).passed
    broken = await _check(gate, "```python\ndef add(a, b)\n    return a + b\n```", catalog)
    assert not broken.passed and "SyntaxError" in broken.reason and "line 1" in broken.reason
    only_shell = await _check(gate, "```bash\nls\n```", catalog)
    assert not only_shell.passed and only_shell.reason == "no Python code in the answer"


async def test_json_and_json_schema_gates(catalog: Catalog, tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
        "required": ["name", "age"],
    }
    path = tmp_path / "person.json"
    path.write_text(json.dumps(schema))
    json_gate, schema_gate = build_gates(f"json,json_schema:{path}", GateEnv(catalog))
    good = '```json\n{"name": "Ada", "age": 36}\n```'
    assert (await _check(json_gate, good, catalog)).passed
    assert (await _check(schema_gate, good, catalog)).passed
    not_json = await _check(json_gate, "{'name': 'Ada'}", catalog)
    assert not not_json.passed and not_json.reason.startswith("not JSON")
    wrong = await _check(schema_gate, '{"name": "Ada", "age": -1}', catalog)
    assert not wrong.passed and "at age" in wrong.reason and "minimum" in wrong.reason


def test_json_schema_gate_refuses_a_bad_schema_or_path(catalog: Catalog, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "no such type"}')
    with pytest.raises(GateError, match="not a valid JSON Schema"):
        build_gate(f"json_schema:{bad}", GateEnv(catalog))
    with pytest.raises(GateError, match="cannot read"):
        build_gate(f"json_schema:{tmp_path / 'missing.json'}", GateEnv(catalog))


async def test_regex_gate(catalog: Catalog) -> None:
    gate = build_gate(r"regex:^ANSWER: \d+$", GateEnv(catalog))
    assert (await _check(gate, "Working...\nANSWER: 42", catalog)).passed is False
    multiline = build_gate(r"regex:(?m)^ANSWER: \d+$", GateEnv(catalog))
    assert (await _check(multiline, "Working...\nANSWER: 42", catalog)).passed
    with pytest.raises(GateError, match="bad pattern"):
        build_gate("regex:(unclosed", GateEnv(catalog))


async def test_gsm8k_answer_checks_are_live_gates(catalog: Catalog) -> None:
    gates = build_gates("answer,arithmetic,consistency", GateEnv(catalog))
    right = "48 / 2 = 24 clips in May. 48 + 24 = 72 in total.\n#### 72"
    wrong_sum = "48 / 2 = 24 clips in May. 48 + 24 = 82 in total.\n#### 82"
    assert [(await _check(g, right, catalog)).passed for g in gates] == [True, True, True]
    arithmetic = await _check(gates[1], wrong_sum, catalog)
    assert not arithmetic.passed and "48 + 24 = 82 is wrong" in arithmetic.reason


# --- the command gate --------------------------------------------------------------------------


async def test_command_gate_runs_the_tests_on_the_answer(catalog: Catalog) -> None:
    env = GateEnv(catalog, files={"test_add.py": ADD_TEST}, timeout_s=120)
    gate = build_gate("command:python -m pytest -q", env)
    passed = await _check(gate, GOOD_ADD, catalog)
    assert passed == GateResult(True, 1.0, "exit 0")
    failed = await _check(gate, BAD_ADD, catalog)
    assert not failed.passed and failed.reason.startswith("exit 1:")
    assert "1 failed" in failed.reason and "assert -1 == 5" in failed.reason


async def test_command_gate_workspace_from_template_and_request(
    catalog: Catalog, tmp_path: Path
) -> None:
    template = tmp_path / "template"
    (template / "data").mkdir(parents=True)
    (template / "data" / "expected.txt").write_text("5")
    check = (
        "from pathlib import Path\nfrom add import add\n"
        "expected = int(Path('data/expected.txt').read_text())\n"
        "assert add(2, 3) == expected, 'wrong sum'\n"
    )
    env = GateEnv(catalog, workspace=template, answer_file="add.py")
    gate = build_gate("command:python check.py", env)
    request = Request.from_prompt("add", metadata={"workspace_files": {"check.py": check}})
    assert (await _check(gate, GOOD_ADD, catalog, request)).passed
    failed = await _check(gate, BAD_ADD, catalog, request)
    assert not failed.passed and "AssertionError: wrong sum" in failed.reason
    escaping = Request.from_prompt("add", metadata={"workspace_files": {"../evil.py": "x"}})
    with pytest.raises(GateError, match="must be a relative path"):
        await _check(gate, GOOD_ADD, catalog, escaping)


async def test_command_gate_kills_a_command_that_times_out(catalog: Catalog) -> None:
    gate = CommandGate("python solution.py", timeout_s=0.5)
    hang = "```python\nimport time\nwhile True:\n    time.sleep(1)\n```"
    result = await _check(gate, hang, catalog)
    assert not result.passed and result.reason == "timed out after 0.5s (killed)"


async def test_command_gate_hides_secrets_and_reports_a_missing_command(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    monkeypatch.setenv("TIERWISE_GATE_PROBE", "visible")
    probe = (
        "import os, sys\n"
        "sys.exit(0 if 'ANTHROPIC_API_KEY' not in os.environ "
        "and os.environ['TIERWISE_GATE_PROBE'] == 'visible' else 3)\n"
    )
    assert (await _check(CommandGate("python solution.py"), probe, catalog)).passed
    with pytest.raises(GateError, match="cannot run"):
        await _check(CommandGate("no-such-command-xyz --flag"), GOOD_ADD, catalog)


# --- gates that ask a model --------------------------------------------------------------------


async def test_confidence_stated_in_the_answer_needs_no_call(catalog: Catalog) -> None:
    trace = Trace(catalog)
    gate = build_gate("confidence>=0.7", GateEnv(catalog))
    request = Request.from_prompt("2+2?")
    high = await gate.check(request, _answer("4. Confidence: 0.9"), trace.task)
    low = await gate.check(request, _answer("4, I think. Confidence: 55%"), trace.task)
    assert (high.passed, high.score) == (True, 0.9)
    assert (low.passed, low.score) == (False, 0.55)
    assert trace.calls == []


async def test_confidence_asked_of_the_answering_model(catalog: Catalog) -> None:
    fake = FakeAnthropic()
    fake.reply_message(fa.text_message('{"confidence": 0.4}', usage_=fa.usage(120, 9)))
    fake.reply_message(fa.text_message("I am not sure.", usage_=fa.usage(120, 5)))
    trace = Trace(catalog, {"anthropic": _anthropic(fake)})
    gate = build_gate("confidence>=0.7", GateEnv(catalog))
    request = Request.from_prompt("Is 1009 prime?")
    low = await gate.check(request, _answer("Yes, 1009 is prime."), trace.task)
    assert (low.passed, low.score, low.reason) == (False, 0.4, "asked confidence 0.4")
    silent = await gate.check(request, _answer("Yes."), trace.task)
    assert not silent.passed and silent.reason == "the model reported no confidence"
    asked = fake.requests[0].json()
    assert asked["model"] == "claude-haiku-4-5" and "tools" not in asked
    assert [m["role"] for m in asked["messages"]] == ["user", "assistant", "user"]
    assert asked["messages"][1]["content"][0]["text"] == "Yes, 1009 is prime."
    first = trace.calls[0]
    assert first.role == "judge" and first.model == HAIKU
    # Haiku 4.5: $1 in, $5 out per million tokens
    assert first.cost_usd == (120 * Decimal(1) + 9 * Decimal(5)) / 1_000_000


async def test_judge_reads_the_answer_and_returns_a_verdict(catalog: Catalog) -> None:
    verdict = {"verdict": "fail", "score": 0.2, "reason": "subtracts instead of adding"}
    fake = FakeAnthropic().reply_message(
        fa.text_message(
            "Verdict:\n" + json.dumps(verdict),
            model=fa.ADVISOR_MODEL,
            usage_=fa.usage(1400, 30),
        )
    )
    trace = Trace(catalog, {"anthropic": _anthropic(fake)})
    gate = build_gate("judge:anthropic:claude-opus-4-7", GateEnv(catalog))
    result = await gate.check(Request.from_prompt("Write add(a, b)."), _answer(BAD_ADD), trace.task)
    assert result == GateResult(False, 0.2, "judge: subtracts instead of adding")
    sent = fake.last_request.json()
    assert sent["model"] == "claude-opus-4-7" and "strict" in sent["system"][0]["text"]
    assert "return a - b" in sent["messages"][0]["content"][0]["text"]
    (call,) = trace.calls
    # Opus 4.7: $5 in, $25 out per million: reading is what a judge mostly pays for
    assert call.role == "judge" and call.cost_usd == Decimal("0.00775")


async def test_judge_without_a_verdict_fails(catalog: Catalog) -> None:
    fake = FakeAnthropic().reply_message(fa.text_message("Looks fine to me!"))
    trace = Trace(catalog, {"anthropic": _anthropic(fake)})
    gate = build_gate("judge:anthropic:claude-sonnet-4-6", GateEnv(catalog))
    result = await gate.check(Request.from_prompt("q"), _answer("a"), trace.task)
    assert result == GateResult(False, None, "the judge gave no verdict")


async def test_agreement_of_k_samples(catalog: Catalog) -> None:
    fake = FakeOpenAI()
    fake.reply_completion(fo.completion("48/2 = 24, 48+24 = 72. The answer is 72."))
    fake.reply_completion(fo.completion("She sold 71 clips.\n#### 71"))
    fake.reply_completion(fo.completion("#### 71"))
    fake.reply_completion(fo.completion("#### 70"))
    trace = Trace(catalog, {"openai": _openai(fake)})
    gate = build_gate("agree:3", GateEnv(catalog))
    request = Request.from_prompt("How many clips?", max_tokens=300)
    answer = _answer("24 + 48 = 72\n#### 72", model="openai:gpt-5-nano")
    agreed = await gate.check(request, answer, trace.task)
    assert agreed == GateResult(True, 2 / 3, "2 of 3 samples agree")
    disagreed = await gate.check(request, answer, trace.task)
    assert disagreed == GateResult(False, 1 / 3, "1 of 3 samples agree")
    assert [c.role for c in trace.calls] == ["judge"] * 4
    assert all(r.json()["model"] == "gpt-5-nano" for r in fake.requests)
    # a reasoning model takes no temperature: its own sampling already varies the samples
    assert "temperature" not in fake.requests[0].json()


# --- building gates from specs -----------------------------------------------------------------


def test_gate_specs_split_only_before_a_known_gate() -> None:
    text = "python,regex:a{1,3},b,command:python -m pytest -q -k 'x or y',confidence>=0.7"
    assert split_gate_specs(text) == [
        "python",
        "regex:a{1,3},b",
        "command:python -m pytest -q -k 'x or y'",
        "confidence>=0.7",
    ]


def test_bad_gate_specs_are_one_clear_error(catalog: Catalog) -> None:
    env = GateEnv(catalog)
    with pytest.raises(GateError, match=r"unknown gate 'pyhton' \(known: agree, answer"):
        build_gate("pyhton", env)
    with pytest.raises(GateError, match="takes no argument"):
        build_gate("python:3", env)
    with pytest.raises(GateError, match="needs cmd"):
        build_gate("command:", env)
    with pytest.raises(GateError, match="between 0 and 1"):
        build_gate("confidence>=7", env)
    with pytest.raises(GateError, match="at least 2"):
        build_gate("agree:1", env)
    with pytest.raises(UnknownModelError, match="did you mean"):
        build_gate("judge:anthropic:claude-opus-4", env)


# --- a gate whose own model call fails ---------------------------------------------------------


def _closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unreachable_openai() -> OpenAICompatProvider:
    config = ProviderConfig(kind="openai", base_url=f"http://127.0.0.1:{_closed_port()}/v1")
    return OpenAICompatProvider("openai", config, "sk-test")


def _failing_judge(catalog: Catalog) -> tuple[Trace, Gate]:
    fake = FakeAnthropic().reply_error(500, "api_error", "Internal server error")
    trace = Trace(catalog, {"anthropic": _anthropic(fake)})
    return trace, build_gate("judge:anthropic:claude-opus-4-7", GateEnv(catalog))


@pytest.mark.parametrize(
    ("on_error", "meaning"),
    [("escalate", "counted as a failed check"), ("accept", "answer accepted unverified")],
)
async def test_a_judge_whose_upstream_answers_500_could_not_check(
    catalog: Catalog, on_error: GateErrorPolicy, meaning: str
) -> None:
    trace, gate = _failing_judge(catalog)
    request = Request.from_prompt("Write add(a, b).")
    verdict = await check_recorded(
        gate, request, _answer(GOOD_ADD), trace.task, call_id="call-1", on_error=on_error
    )
    assert not verdict.passed and not verdict.checked and verdict.score is None
    assert verdict.error is not None and verdict.error.startswith("ServerError: ")
    assert "status 500" in verdict.error
    assert verdict.reason == f"could not check ({meaning}): {verdict.error}"
    assert accepted(verdict, on_error) is (on_error == "accept")
    (call,) = trace.calls  # the failed judge call is in the ledger, at $0
    assert (call.role, call.status, call.cost_usd, call.http_status) == (
        "judge",
        "error",
        Decimal(0),
        500,
    )
    (record,) = [r for r in trace.records if isinstance(r, GateRecord)]
    assert (record.gate, record.call_id, record.passed) == (gate.name, "call-1", False)
    assert record.reason == verdict.reason


async def test_on_gate_error_fail_records_the_gate_then_raises(catalog: Catalog) -> None:
    trace, gate = _failing_judge(catalog)
    with pytest.raises(ServerError):
        await check_recorded(
            gate, Request.from_prompt("q"), _answer("a"), trace.task, on_error="fail"
        )
    (record,) = [r for r in trace.records if isinstance(r, GateRecord)]
    assert not record.passed and "could not check (the task fails): ServerError" in record.reason


async def test_a_confidence_question_to_an_unreachable_upstream_could_not_check(
    catalog: Catalog,
) -> None:
    trace = Trace(catalog, {"openai": _unreachable_openai()})
    gate = build_gate("confidence>=0.7", GateEnv(catalog))
    answer = _answer("72", model="openai:gpt-5-nano")
    verdict = await check_recorded(
        gate, Request.from_prompt("q"), answer, trace.task, on_error="escalate"
    )
    assert verdict.error is not None and verdict.error.startswith("UpstreamConnectionError: ")
    (call,) = trace.calls
    assert (call.status, call.cost_usd, call.error_type) == (
        "error",
        Decimal(0),
        "UpstreamConnectionError",
    )


async def test_a_task_budget_refusing_the_judge_is_not_a_gate_error(catalog: Catalog) -> None:
    trace, gate = _failing_judge(catalog)
    trace.task.guard = BudgetGuard(TaskBudget(usd=Decimal("0.000001")))
    with pytest.raises(BudgetExceededError):
        await check_recorded(
            gate, Request.from_prompt("q"), _answer("a"), trace.task, on_error="accept"
        )
    assert trace.records == []  # refused before the call: no call, no verdict


def test_on_gate_error_names_its_choices() -> None:
    assert gate_error_policy("accept") == "accept"
    with pytest.raises(PolicyError, match=r"on_gate_error must be escalate\|accept\|fail"):
        gate_error_policy("ignore")
