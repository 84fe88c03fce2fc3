"""Verify and escalate through the engine, over the real SDKs and fake upstreams.

Costs are worked out by hand from list prices (USD per million tokens): Haiku 4.5 $1 / $5,
Sonnet 4.6 $3 / $15, Opus 4.7 $5 / $25, GPT-5 nano $0.05 / $0.40.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.fakes import anthropic_upstream as fa
from tests.fakes import openai_upstream as fo
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_harness import Served, fake_engine, gateway_settings, running_gateway
from tierwise.config import Settings
from tierwise.engine import Engine
from tierwise.errors import GateError, PolicyError, ServerError
from tierwise.ledger.store import Ledger
from tierwise.messages import Request
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import ProviderConfig
from tierwise.providers.openai_compat import OpenAICompatProvider
from tierwise.strategies.cascade import CascadeStrategy
from tierwise.streaming import collect

HAIKU, SONNET, OPUS = (
    "anthropic:claude-haiku-4-5",
    "anthropic:claude-sonnet-4-6",
    "anthropic:claude-opus-4-7",
)
NANO, MINI = "openai:gpt-5-nano", "openai:gpt-5-mini"
ADD_TEST = "from solution import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
GOOD_ADD = "```python\ndef add(a, b):\n    return a + b\n```"
BAD_ADD = "```python\ndef add(a, b):\n    return a - b\n```"
TESTS = "command:python -m pytest -q"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "add_task"
    folder.mkdir()
    (folder / "test_add.py").write_text(ADD_TEST)
    return folder


@pytest.fixture
def fakes() -> tuple[FakeAnthropic, FakeOpenAI]:
    return FakeAnthropic(), FakeOpenAI()


@pytest.fixture
def engine(settings: Settings, fakes: tuple[FakeAnthropic, FakeOpenAI]) -> Engine:
    return fake_engine(settings, *fakes)


def _coding_policy(workspace: Path, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"workspace": str(workspace), **params}.items())
    return f"cascade:{HAIKU},{SONNET},{OPUS}?gates=python,{TESTS}&{query}"


def _reply(fake: FakeAnthropic, text: str, tokens_in: int, tokens_out: int) -> None:
    fake.reply_message(fa.text_message(text, usage_=fa.usage(tokens_in, tokens_out)))


async def test_cheap_answer_failing_its_tests_escalates(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI], workspace: Path, settings: Settings
) -> None:
    anthropic_fake, _ = fakes
    _reply(anthropic_fake, BAD_ADD, 40, 30)
    _reply(anthropic_fake, GOOD_ADD, 40, 35)
    async with engine:
        result = await engine.complete(
            "Write add(a, b).", _coding_policy(workspace, retry_pass_rate="0.2")
        )
    assert result.response.text() == GOOD_ADD and result.response.model == SONNET
    assert [r.json()["model"] for r in anthropic_fake.requests] == [
        "claude-haiku-4-5",
        "claude-sonnet-4-6",
    ]
    haiku = 40 * 1 + 30 * 5  # 190 micro-dollars
    sonnet = 40 * 3 + 35 * 15  # 645
    assert result.cost_usd == Decimal(haiku + sonnet) / 1_000_000 == Decimal("0.000835")
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        calls = ledger.calls()
        gates = ledger.gate_results()
        (escalation,) = ledger.escalations()
        (decision,) = ledger.decisions()
        outcomes = {o.source: o for o in ledger.outcomes()}
    assert [(c.model, c.cost_usd) for c in calls] == [
        (HAIKU, Decimal("0.00019")),
        (SONNET, Decimal("0.000645")),
    ]
    verdicts = [(g.call_id, g.gate, g.passed) for g in gates]
    assert verdicts == [
        (calls[0].id, "python", True),
        (calls[0].id, TESTS, False),
        (calls[1].id, "python", True),
        (calls[1].id, TESTS, True),
    ]
    assert "assert -1 == 5" in gates[1].reason
    assert (escalation.from_model, escalation.to_model) == (HAIKU, SONNET)
    assert escalation.trigger.startswith(f"gate {TESTS} failed: exit 1")
    # 190 + (1 - 0.2) * (40 * 3 + 30 * 15) = 646 > 570: a Sonnet try is the cheaper bet
    assert escalation.trigger.endswith("climbing: retry then climb $0.000646 vs climb $0.000570")
    assert decision.router == "cascade" and decision.chosen_model == HAIKU
    assert outcomes["gate"].outcome == "success" and outcomes["engine"].outcome == "success"
    assert f"{HAIKU} -> {SONNET}: gate {TESTS} failed" in result.explain()


async def test_cheap_answer_passing_its_tests_stops_at_the_cheap_tier(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI], workspace: Path, settings: Settings
) -> None:
    anthropic_fake, _ = fakes
    _reply(anthropic_fake, GOOD_ADD, 40, 35)
    async with engine:
        result = await engine.complete("Write add(a, b).", _coding_policy(workspace))
    assert result.response.model == HAIKU and len(anthropic_fake.requests) == 1
    assert result.cost_usd == Decimal(40 * 1 + 35 * 5) / 1_000_000
    assert [(g.gate, g.passed) for g in result.gates] == [("python", True), (TESTS, True)]
    assert result.escalations == []
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        assert ledger.escalations() == []
        assert [o.outcome for o in ledger.outcomes() if o.source == "gate"] == ["success"]


async def test_a_retry_is_taken_when_cheaper_in_expectation(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic_fake, openai_fake = fakes
    usage = fo.usage(100, 200)
    openai_fake.reply_completion(fo.completion("def add(a, b) return a + b", token_usage=usage))
    openai_fake.reply_completion(fo.completion(GOOD_ADD, token_usage=usage))
    async with engine:
        result = await engine.complete("Write add(a, b).", f"cascade:{NANO},{OPUS}?gates=python")
    assert result.response.model == NANO and anthropic_fake.requests == []
    (retry,) = result.escalations
    assert (retry.from_model, retry.to_model) == (NANO, NANO)
    # nano 100 * 0.05 + 200 * 0.40 = 85; Opus 100 * 5 + 200 * 25 = 5500;
    # 85 + (1 - 0.3) * 5500 = 3935 < 5500
    assert retry.trigger.endswith("retrying (p=0.3): retry then climb $0.003935 vs climb $0.005500")
    assert result.cost_usd == Decimal(2 * 85) / 1_000_000


async def test_escalation_is_bounded_and_the_last_answer_is_kept(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI], workspace: Path, settings: Settings
) -> None:
    anthropic_fake, _ = fakes
    _reply(anthropic_fake, BAD_ADD, 40, 30)
    _reply(anthropic_fake, "```python\ndef add(a, b):\n    return a * b\n```", 40, 30)
    policy = _coding_policy(workspace, max_escalations="1", retries="0")
    async with engine:
        result = await engine.complete("Write add(a, b).", policy)
    assert result.response.model == SONNET and "a * b" in result.response.text()
    assert len(anthropic_fake.requests) == 2  # Opus is never asked
    (escalation,) = result.escalations
    assert escalation.trigger.endswith("climbing: no retry left at this tier")
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (verdict,) = [o for o in ledger.outcomes() if o.source == "gate"]
    assert verdict.outcome == "failure"
    assert verdict.detail.startswith(f"no tier passed; last: {SONNET} failed {TESTS}: exit 1")


async def test_streaming_runs_the_cascade_then_streams_the_final_answer(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI], workspace: Path, settings: Settings
) -> None:
    anthropic_fake, _ = fakes
    _reply(anthropic_fake, BAD_ADD, 40, 30)
    _reply(anthropic_fake, GOOD_ADD, 40, 35)
    async with engine:
        response = await collect(engine.stream("Write add(a, b).", _coding_policy(workspace)))
    assert response.text() == GOOD_ADD and response.model == SONNET
    assert response.usage.output_tokens == 35
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        assert [c.model for c in ledger.calls()] == [HAIKU, SONNET]
        assert [o.outcome for o in ledger.outcomes()] == ["success", "success"]


async def test_judge_gate_in_a_cascade_is_costed_as_a_judge_call(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic_fake, openai_fake = fakes
    openai_fake.reply_completion(fo.completion("Paris is in Italy.", token_usage=fo.usage(20, 8)))
    failing = {"verdict": "fail", "score": 0, "reason": "Paris is in France"}
    _reply(anthropic_fake, json.dumps(failing), 300, 25)
    _reply(anthropic_fake, "Paris is in France.", 20, 6)
    _reply(
        anthropic_fake, json.dumps({"verdict": "pass", "score": 0.9, "reason": "right"}), 300, 20
    )
    policy = f"cascade:{NANO},{SONNET}?gates=judge:{OPUS}&retries=0"
    async with engine:
        result = await engine.complete("Where is Paris?", policy)
    assert result.response.text() == "Paris is in France."
    assert [(c.role, c.model) for c in result.calls] == [
        ("executor", NANO),
        ("judge", OPUS),
        ("executor", SONNET),
        ("judge", OPUS),
    ]
    assert [(g.passed, g.score) for g in result.gates] == [(False, 0.0), (True, 0.9)]
    # nano 20 * 0.05 + 8 * 0.40 = 4.2; judge 300 * 5 + 25 * 25 = 2125;
    # Sonnet 20 * 3 + 6 * 15 = 150; judge 300 * 5 + 20 * 25 = 2000 (micro-dollars)
    assert result.cost_usd == Decimal("0.0042792")


async def test_start_tier_from_a_router(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic_fake, _ = fakes
    _reply(anthropic_fake, "Use constant-time comparison for the token check.", 50, 20)
    policy = f"cascade:{HAIKU},{SONNET},{OPUS}?gates=regex:constant-time&start=route:rules"
    async with engine:
        result = await engine.complete(
            "Review the authentication module for security vulnerabilities and token leaks.",
            policy,
        )
    (decision,) = result.decisions
    assert decision.router == "rules"
    assert result.calls[0].model == decision.chosen_model == result.response.model
    assert result.gates[0].passed


def test_default_cascade_policy_uses_the_config(settings: Settings) -> None:
    configured = settings.model_copy(
        update={"cascade": settings.cascade.model_copy(update={"tiers": [NANO, SONNET]})}
    )
    strategy = Engine(configured).strategy("cascade")
    assert isinstance(strategy, CascadeStrategy)
    assert [t.id for t in strategy.tiers] == [NANO, SONNET]
    assert [g.name for g in strategy.gates] == ["confidence>=0.7"]


@pytest.mark.parametrize(
    ("policy", "error", "message"),
    [
        (f"cascade:{HAIKU}?gate=python", PolicyError, "unknown parameter"),
        (f"cascade:{HAIKU}?gates=pyhton", GateError, "unknown gate"),
        (f"cascade:{HAIKU}?start=rules", PolicyError, "start must be route:<router>"),
        (f"cascade:{HAIKU}?retries=many", PolicyError, "not a number"),
    ],
)
def test_bad_cascade_policies(settings: Settings, policy: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        Engine(settings).strategy(policy)


@pytest.fixture
def gw(settings: Settings) -> Iterator[Served]:
    cascade = {"tiers": [HAIKU, SONNET], "gates": ["regex:(?i)paris"]}
    with running_gateway(gateway_settings(settings.resolved_ledger_url(), cascade=cascade)) as g:
        yield g


def test_gateway_serves_the_default_cascade(gw: Served) -> None:
    gw.anthropic_fake.reply_message(fa.text_message("I don't know."))
    gw.anthropic_fake.reply_message(fa.text_message("Paris."))
    reply = gw.openai().chat.completions.create(
        model="tierwise/cascade", messages=[{"role": "user", "content": "Capital of France?"}]
    )
    assert reply.choices[0].message.content == "Paris."
    assert reply.model == SONNET


async def test_requests_carry_workspace_files_to_the_command_gate(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic_fake, _ = fakes
    _reply(anthropic_fake, GOOD_ADD, 10, 10)
    request = Request.from_prompt(
        "Write add(a, b).", metadata={"workspace_files": {"test_add.py": ADD_TEST}}
    )
    async with engine:
        result = await engine.complete(request, f"cascade:{HAIKU}?gates={TESTS}")
    assert [(g.gate, g.passed, g.reason) for g in result.gates] == [(TESTS, True, "exit 0")]


def test_gateway_streams_the_cascade_answer(gw: Served) -> None:
    gw.anthropic_fake.reply_message(fa.text_message("Lyon?"))
    gw.anthropic_fake.reply_message(fa.text_message("Paris, on the Seine."))
    with gw.anthropic().messages.stream(
        model="tierwise/cascade",
        max_tokens=100,
        messages=[{"role": "user", "content": "Capital of France?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "Paris, on the Seine."
    assert not any(r.wants_stream for r in gw.anthropic_fake.requests)  # gated before streaming


async def test_feedback_shows_the_next_tier_the_failed_answer_and_why(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI], workspace: Path
) -> None:
    anthropic_fake, _ = fakes
    _reply(anthropic_fake, BAD_ADD, 40, 30)
    _reply(anthropic_fake, GOOD_ADD, 90, 35)
    async with engine:
        result = await engine.complete(
            "Write add(a, b).", _coding_policy(workspace, feedback="true", retries="0")
        )
    assert result.response.text() == GOOD_ADD
    first, second = (r.json()["messages"] for r in anthropic_fake.requests)
    assert len(first) == 1 and [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"][0]["text"] == BAD_ADD
    note = second[2]["content"][0]["text"]
    assert note.startswith(f"Your answer failed the check `{TESTS}`: exit 1")
    assert "assert -1 == 5" in note


# --- a judge that cannot be reached ------------------------------------------------------------

PASSING = json.dumps({"verdict": "pass", "score": 0.9, "reason": "right"})
JUDGED = f"cascade:{NANO},{SONNET}?gates=judge:{OPUS}&retries=0"


def _judge_down(fakes: tuple[FakeAnthropic, FakeOpenAI]) -> None:
    """Nano answers; the Opus judge answers 500 (the real error envelope)."""
    anthropic_fake, openai_fake = fakes
    openai_fake.reply_completion(fo.completion("Paris.", token_usage=fo.usage(20, 8)))
    anthropic_fake.reply_error(500, "api_error", "Internal server error")


async def test_a_judge_answering_500_escalates_by_default(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI], settings: Settings
) -> None:
    anthropic_fake, _ = fakes
    _judge_down(fakes)
    _reply(anthropic_fake, "Paris, France.", 20, 6)  # Sonnet
    _reply(anthropic_fake, PASSING, 300, 20)  # the judge is back
    async with engine:
        result = await engine.complete("Capital of France?", JUDGED)
    assert result.response.text() == "Paris, France." and result.response.model == SONNET
    assert [(c.role, c.model, c.status) for c in result.calls] == [
        ("executor", NANO, "ok"),
        ("judge", OPUS, "error"),
        ("executor", SONNET, "ok"),
        ("judge", OPUS, "ok"),
    ]
    # nano 20 * 0.05 + 8 * 0.40 = 4.2; the failed judge call $0; Sonnet 150; judge 2000
    assert result.calls[1].cost_usd == 0 and result.cost_usd == Decimal("0.0021542")
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        calls = ledger.calls()
        first, second = ledger.gate_results()
        (escalation,) = ledger.escalations()
        (outcome,) = [o for o in ledger.outcomes() if o.source == "gate"]
    assert (calls[1].status, calls[1].http_status, calls[1].cost_usd) == ("error", 500, 0)
    assert (first.call_id, first.gate, first.passed) == (calls[0].id, f"judge:{OPUS}", False)
    assert first.reason.startswith("could not check (counted as a failed check): ServerError")
    assert "Internal server error" in first.reason and "status 500" in first.reason
    assert second.passed and escalation.trigger.startswith(
        f"gate judge:{OPUS} failed: could not check"
    )
    assert outcome.outcome == "success"


async def test_a_judge_answering_500_with_accept_keeps_the_answer_unverified(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI], settings: Settings
) -> None:
    anthropic_fake, _ = fakes
    _judge_down(fakes)
    async with engine:
        result = await engine.complete("Capital of France?", JUDGED + "&on_gate_error=accept")
    assert result.response.text() == "Paris." and result.response.model == NANO
    assert len(anthropic_fake.requests) == 1 and result.escalations == []
    (gate,) = result.gates
    assert not gate.passed
    assert gate.reason.startswith("could not check (answer accepted unverified)")
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (outcome,) = [o for o in ledger.outcomes() if o.source == "gate"]
    assert outcome.outcome == "success"
    assert outcome.detail.startswith(f"{NANO} accepted unverified: gate judge:{OPUS} could not")


async def test_a_judge_answering_500_with_fail_fails_the_task(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI], settings: Settings
) -> None:
    _judge_down(fakes)
    async with engine:
        with pytest.raises(ServerError, match="Internal server error"):
            await engine.complete("Capital of France?", JUDGED + "&on_gate_error=fail")
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        calls = [(c.role, c.status) for c in ledger.calls()]
        assert calls == [("executor", "ok"), ("judge", "error")]
        (gate,) = ledger.gate_results()
    assert gate.reason.startswith("could not check (the task fails): ServerError")


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_judge_refusing_connections_never_fails_the_task(
    settings: Settings, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    """Every tier's answer goes unchecked: the ladder climbs to the top and the last answer
    comes back, its outcome a failure that names the connection error."""
    _, openai_fake = fakes
    openai_fake.reply_completion(fo.completion("Paris?", token_usage=fo.usage(20, 8)))
    openai_fake.reply_completion(fo.completion("Paris.", token_usage=fo.usage(20, 6)))
    unreachable = ProviderConfig(kind="anthropic", base_url=f"http://127.0.0.1:{_closed_port()}")
    providers = {
        "anthropic": AnthropicProvider("anthropic", unreachable, "sk-ant-test"),
        "openai": OpenAICompatProvider(
            "openai",
            ProviderConfig(kind="openai", base_url="http://openai.fake/v1"),
            "sk-test",
            http_client=openai_fake.client(),
        ),
    }
    engine = Engine(settings, providers=providers)
    async with engine:
        result = await engine.complete(
            "Capital of France?", f"cascade:{NANO},{MINI}?gates=judge:{OPUS}&retries=0"
        )
    assert result.response.text() == "Paris." and result.response.model == MINI
    judged = [c for c in result.calls if c.role == "judge"]
    assert [(c.status, c.cost_usd, c.error_type) for c in judged] == [
        ("error", 0, "UpstreamConnectionError")
    ] * 2
    assert all("UpstreamConnectionError" in g.reason for g in result.gates)
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (outcome,) = [o for o in ledger.outcomes() if o.source == "gate"]
    assert outcome.outcome == "failure" and "could not check" in outcome.detail


async def test_feedback_does_not_blame_the_answer_for_a_judge_that_could_not_check(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    anthropic_fake, _ = fakes
    _judge_down(fakes)
    _reply(anthropic_fake, "Paris, France.", 20, 6)
    _reply(anthropic_fake, PASSING, 300, 20)
    async with engine:
        await engine.complete("Capital of France?", JUDGED + "&feedback=true")
    sonnet = anthropic_fake.requests[1].json()
    assert sonnet["model"] == "claude-sonnet-4-6" and len(sonnet["messages"]) == 1


def test_bad_on_gate_error_is_one_clear_error(settings: Settings) -> None:
    with pytest.raises(PolicyError, match=r"on_gate_error must be escalate\|accept\|fail"):
        Engine(settings).strategy(f"{JUDGED}&on_gate_error=ignore")
