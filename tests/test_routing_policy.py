"""``route:<router>`` policies through the engine, on recorded GSM8K outcomes (replay
provider) and a real SQLite ledger: the decision lands in the ledger with the router, every
candidate's score, the threshold and the reason."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from tierwise.catalog import Catalog
from tierwise.config import Settings, load_settings
from tierwise.datasets import RecordedOutcome, get_dataset
from tierwise.engine import Engine
from tierwise.errors import PolicyError, UnknownModelError
from tierwise.ledger.store import Ledger
from tierwise.messages import Message, Request, TextBlock
from tierwise.policies import resolve_policy
from tierwise.providers.replay import ReplayProvider
from tierwise.routing.registry import RouterEnv
from tierwise.strategies.route import RoutingStrategy, resolve_candidates
from tierwise.streaming import collect

STRONG = "openai:gpt-4-1106-preview"
WEAK = "together:mistralai/Mixtral-8x7B-Instruct-v0.1"
PAIR = f"candidates={WEAK},{STRONG}"


@functools.cache
def _recorded(path: Path) -> list[RecordedOutcome]:
    return get_dataset("routellm-gsm8k").load(path)[:400]  # 200 prompts, both models


@pytest.fixture
def gsm8k(shared_data: Path) -> list[RecordedOutcome]:
    return _recorded(shared_data / get_dataset("routellm-gsm8k").local_path)


@pytest.fixture
def prompts(gsm8k: list[RecordedOutcome]) -> list[str]:
    return list(dict.fromkeys(o.prompt for o in gsm8k))


def _engine(settings: Settings, outcomes: list[RecordedOutcome]) -> Engine:
    replay = ReplayProvider("replay", outcomes)
    return Engine(settings, providers={"openai": replay, "together": replay})


def _env(settings: Settings, catalog: Catalog, tmp_path: Path) -> RouterEnv:
    return RouterEnv(settings=settings, catalog=catalog, artifacts_dir=tmp_path)


async def test_route_rules_records_its_decision_in_the_ledger(settings, gsm8k, prompts):
    policy = f"route:rules?{PAIR}"
    async with _engine(settings, gsm8k) as engine:
        result = await engine.complete(prompts[0], policy)
    assert result.policy == policy
    (call,) = result.calls
    assert call.model == WEAK  # a word problem needs no more than the smallest tier
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (decision,) = ledger.decisions(task_id=result.task_id)
    assert decision.router == "rules" and decision.chosen_model == WEAK
    assert decision.threshold == 1.0
    assert [c["model"] for c in decision.candidates] == [WEAK, STRONG]
    assert [c["predicted_quality"] for c in decision.candidates] == [1.0, 1.0]
    assert all(c["predicted_cost"] is not None for c in decision.candidates)
    assert decision.reason.endswith(
        f"-> needs tier>=1 -> {WEAK}, the cheapest candidate that meets it"
    )
    assert result.explain().startswith(f"rules: {WEAK} — ")


async def test_route_rules_sends_a_security_task_to_the_strongest(settings, catalog):
    prompt = "Audit the JWT auth flow for token replay vulnerabilities across 8 files."
    outcomes = [RecordedOutcome(row_id="s", prompt=prompt, model=STRONG, response_text="ok")]
    async with _engine(settings, outcomes) as engine:
        result = await engine.complete(prompt, f"route:rules?{PAIR}")
    assert result.calls[0].model == STRONG
    assert catalog.get(STRONG).profile.tier > catalog.get(WEAK).profile.tier
    assert "security words: audit, jwt, auth, token, vulnerabilities" in result.explain()


async def test_route_random_sends_about_p_to_the_strongest(settings, gsm8k, prompts):
    async with _engine(settings, gsm8k) as engine:
        chosen = [
            (await engine.complete(p, f"route:random?p=0.3&seed=7&{PAIR}")).calls[0].model
            for p in prompts
        ]
        again = await engine.complete(prompts[0], f"route:random?p=0.3&seed=7&{PAIR}")
    share = chosen.count(STRONG) / len(chosen)
    assert 0.2 < share < 0.4
    assert again.calls[0].model == chosen[0]  # the draw is fixed by seed and prompt
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        decisions = ledger.decisions()
    assert {d.router for d in decisions} == {"random"}
    assert all(d.threshold == 0.3 for d in decisions)
    assert any("-> the strongest candidate" in d.reason for d in decisions)


async def test_random_seeds_and_extremes(settings, gsm8k, prompts):
    async with _engine(settings, gsm8k) as engine:
        picks = {}
        for policy in ("p=0.5&seed=1", "p=0.5&seed=2", "p=0", "p=1"):
            results = [
                await engine.complete(p, f"route:random?{policy}&{PAIR}") for p in prompts[:40]
            ]
            picks[policy] = [r.calls[0].model for r in results]
    assert picks["p=0.5&seed=1"] != picks["p=0.5&seed=2"]
    assert set(picks["p=0"]) == {WEAK} and set(picks["p=1"]) == {STRONG}


async def test_cheapest_and_strongest_baselines(settings, gsm8k, prompts):
    async with _engine(settings, gsm8k) as engine:
        cheap = await engine.complete(prompts[0], f"route:cheapest?{PAIR}")
        strong = await engine.complete(prompts[0], f"route:strongest?{PAIR}")
    assert cheap.calls[0].model == WEAK and strong.calls[0].model == STRONG
    assert cheap.cost_usd is not None and strong.cost_usd is not None
    assert cheap.cost_usd < strong.cost_usd


async def test_streamed_route_records_the_decision_too(settings, gsm8k, prompts):
    async with _engine(settings, gsm8k) as engine:
        response = await collect(engine.stream(prompts[1], f"route:strongest?{PAIR}"))
    assert response.model == STRONG
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (decision,) = ledger.decisions()
        (call,) = ledger.calls()
    assert decision.chosen_model == STRONG and call.stream


async def test_a_conversation_stays_on_its_model_while_it_meets_the_task(settings):
    first = "Audit the session token handling in the auth module."
    follow_up = "Now list the files you looked at."
    opus, nano = "anthropic:claude-opus-4-7", "openai:gpt-5-nano"
    outcomes = [
        RecordedOutcome(row_id="1", prompt=first, model=opus, response_text="Found two issues."),
        RecordedOutcome(row_id="2", prompt=follow_up, model=opus, response_text="auth.py"),
        RecordedOutcome(row_id="3", prompt=follow_up, model=nano, response_text="auth.py"),
    ]
    replay = ReplayProvider("replay", outcomes)
    policy = f"route:rules?candidates={nano},{opus}"
    turn_two = Request(
        messages=[
            Message(role="user", content=[TextBlock(text=first)]),
            Message(role="assistant", content=[TextBlock(text="Found two issues.")]),
            Message(role="user", content=[TextBlock(text=follow_up)]),
        ]
    )
    async with Engine(settings, providers={"anthropic": replay, "openai": replay}) as engine:
        one = await engine.complete(first, policy)
        two = await engine.complete(turn_two, policy)
        fresh = await engine.complete(follow_up, policy)
    assert one.calls[0].model == opus
    assert two.calls[0].model == opus and "prompt cache warm" in two.explain()
    assert fresh.calls[0].model == nano  # the same task, outside that conversation


def test_unknown_router_is_a_policy_error(settings, catalog, tmp_path):
    env = _env(settings, catalog, tmp_path)
    with pytest.raises(PolicyError, match="unknown router 'magic' \\(known: cheapest, classifier"):
        resolve_policy(f"route:magic?{PAIR}", env)
    with pytest.raises(PolicyError, match="policy 'route' needs a router"):
        resolve_policy("route", env)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("p=2", "router 'random': p must be a number from 0.0 to 1.0, got '2'"),
        ("p=abc", "router 'random': p must be a number from 0.0 to 1.0, got 'abc'"),
        ("seed=x", "router 'random': seed must be an integer, got 'x'"),
        ("q=1", "router 'random' does not take 'q' \\(takes: p, seed\\)"),
    ],
)
def test_bad_router_params_are_clear_policy_errors(settings, catalog, tmp_path, query, message):
    with pytest.raises(PolicyError, match=message):
        resolve_policy(f"route:random?{query}&{PAIR}", _env(settings, catalog, tmp_path))


def test_unknown_candidate_names_the_model(settings, catalog, tmp_path):
    with pytest.raises(UnknownModelError, match="openai:gpt-9"):
        resolve_policy("route:rules?candidates=openai:gpt-9", _env(settings, catalog, tmp_path))


def test_named_policy_can_route(tmp_path, catalog):
    settings = load_settings(None, policies={"auto": f"route:rules?{PAIR}"})
    strategy = resolve_policy("auto", _env(settings, catalog, tmp_path))
    assert isinstance(strategy, RoutingStrategy)
    assert [c.id for c in strategy.candidates] == [WEAK, STRONG]


def test_default_candidates_are_the_models_with_keys(monkeypatch, tmp_path, catalog):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    env = _env(load_settings(None), catalog, tmp_path)
    providers = {spec.provider for spec in resolve_candidates([], env)}
    assert "openai" in providers and "ollama" not in providers  # a local host: not named
    assert "anthropic" not in providers and "together" not in providers
    named = _env(load_settings(None, providers={"ollama": {}}), catalog, tmp_path)
    assert "ollama" in {spec.provider for spec in resolve_candidates([], named)}  # needs no key
    configured = load_settings(None, routing={"candidates": [WEAK, STRONG]})
    assert [c.id for c in resolve_candidates([], _env(configured, catalog, tmp_path))] == [
        WEAK,
        STRONG,
    ]


def test_no_usable_candidate_says_how_to_fix_it(tmp_path, catalog):
    settings = load_settings(None)
    rows = {name: row for name, row in settings.providers.items() if row.requires_key}
    keyless = settings.model_copy(update={"providers": rows})
    with pytest.raises(PolicyError, match="no candidate models: set a provider's API key"):
        resolve_candidates([], _env(keyless, catalog, tmp_path))
