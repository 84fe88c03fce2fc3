"""The rules router on realistic coding-agent tasks, with the shipped catalog and rules.

Candidates span the tiers: gpt-5-nano (1), claude-haiku-4-5 and gpt-4.1-mini (2),
claude-sonnet-4-6 and gpt-4.1 (3), claude-opus-4-7 (4). Assertions are on the tier and
skills of the chosen model first, names second.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest

from tierwise.catalog import Catalog, ModelSpec
from tierwise.config import load_settings
from tierwise.errors import ConfigError, PolicyError
from tierwise.messages import Message, Request, TextBlock, Tool, ToolResultBlock, ToolUseBlock
from tierwise.routing.base import RouteContext, by_cost
from tierwise.routing.registry import RouterEnv
from tierwise.routing.rules import RulesRouter, build, compile_rules
from tierwise.routing.signals import Lexicon, extract_signals, words_of

CANDIDATES = (
    "openai:gpt-5-nano",
    "anthropic:claude-haiku-4-5",
    "openai:gpt-4.1-mini",
    "anthropic:claude-sonnet-4-6",
    "openai:gpt-4.1",
    "anthropic:claude-opus-4-7",
)

FILE_READ = "Read src/tierwise/config.py and tell me what load_settings does."
RENAME = "Rename the function `get_usr` to `get_user` in utils/helpers.py."
FEATURE = """Add a `--json` flag to the `tierwise models` command. Requirements:
1. print the catalog as a JSON array, one object per model;
2. keep prices as strings so no precision is lost;
3. exit non-zero when the catalog fails to load."""
REFACTOR = (
    "Refactor the retry logic in providers/retry.py and providers/base.py into a RetryPolicy "
    "class, and write unit tests for it in tests/test_retry.py."
)
SECURITY_REVIEW = (
    "Review the auth module for security problems: session tokens are kept in plain text "
    "and the login endpoint skips the password check on retry. The fix touches 7 files."
)
TRANSCRIPT_LINE = (
    "Dana: the migration to the new billing provider slipped a week because the webhook "
    "retries were double-charging a handful of customers, so we paused the rollout.\n"
)


@pytest.fixture
def candidates(catalog: Catalog) -> list[ModelSpec]:
    return [catalog.get(model_id) for model_id in CANDIDATES]


@pytest.fixture
def context(catalog: Catalog) -> RouteContext:
    return RouteContext(catalog=catalog)


def _chosen(router: RulesRouter, request: Request, candidates, context) -> ModelSpec:
    decision = router.select(request, candidates, context)
    return context.catalog.get(decision.chosen)


def _transcript(tokens: int) -> str:
    per_line = len(words_of(TRANSCRIPT_LINE).split()) + 3  # words plus punctuation marks
    return "Summarise this meeting transcript in ten bullet points:\n" + TRANSCRIPT_LINE * (
        tokens // per_line
    )


# --- signals ----------------------------------------------------------------------------------


def test_signals_of_a_file_read():
    signals = extract_signals(Request.from_prompt(FILE_READ))
    assert signals.task_kind == "simple" and "read" in signals.kind_words
    assert signals.files_affected == 1
    assert not signals.security_words  # the path config.py is a file, not prose
    assert signals.long_context_need == 0 and signals.turns == 1


def test_signals_of_a_rename_ignore_inline_code():
    signals = extract_signals(Request.from_prompt(RENAME))
    assert signals.task_kind == "simple" and signals.kind_words == ("rename",)
    assert "usr" not in signals.text  # inline code is cut from the prose


def test_signals_of_a_feature_request_count_numbered_requirements():
    signals = extract_signals(Request.from_prompt(FEATURE))
    assert signals.task_kind == "standard" and "add" in signals.kind_words
    assert "3 numbered requirements" in signals.reasoning


def test_signals_of_a_refactor_with_tests():
    signals = extract_signals(Request.from_prompt(REFACTOR))
    assert signals.task_kind == "standard"
    assert {"refactor", "tests"} <= set(signals.kind_words)
    assert signals.files_affected == 3


def test_signals_of_a_security_review():
    signals = extract_signals(Request.from_prompt(SECURITY_REVIEW))
    assert signals.task_kind == "complex"
    assert signals.security_words == ("auth", "security", "tokens", "password")
    assert signals.files_affected == 7


def test_signals_of_code_and_math():
    code = "Why does this fail?\n```python\ndef f(x):\n    return x / 0\n```\n"
    signals = extract_signals(Request.from_prompt(code))
    assert signals.code_blocks == 1 and signals.code_lines == 2 and signals.has_code
    math = extract_signals(Request.from_prompt(r"Prove that \sqrt{2} is irrational, step by step."))
    assert "latex" in math.math and {"prove", "step by step"} <= set(math.reasoning)


def test_files_and_lines_from_metadata_and_a_diffstat_tool_result():
    diffstat = (
        " src/auth/session.py | 40 ++--\n 7 files changed, 180 insertions(+), 42 deletions(-)"
    )
    request = Request(
        messages=[
            Message(role="user", content=[TextBlock(text="Show me what changed.")]),
            Message(role="assistant", content=[ToolUseBlock(id="t1", name="bash")]),
            Message(role="user", content=[ToolResultBlock(tool_use_id="t1", content=diffstat)]),
        ],
        metadata={"lines_changed": 12},
    )
    signals = extract_signals(request)
    assert (signals.files_affected, signals.lines_changed) == (7, 222)
    assert signals.turns == 2
    listing = "src/a.py\nsrc/b.py\nsrc/c/d.ts\nREADME.md\n"
    request = Request(
        messages=[
            Message(role="user", content=[TextBlock(text="Fix the imports.")]),
            Message(role="assistant", content=[ToolUseBlock(id="t1", name="grep")]),
            Message(role="user", content=[ToolResultBlock(tool_use_id="t1", content=listing)]),
        ]
    )
    assert extract_signals(request).files_affected == 4
    explicit = Request.from_prompt("Fix it.", metadata={"files_affected": 9})
    assert extract_signals(explicit).files_affected == 9


def test_long_context_need_counts_every_message():
    signals = extract_signals(Request.from_prompt(_transcript(40_000)))
    assert 38_000 < signals.context_tokens < 42_000
    assert signals.long_context_need == 1 and signals.task_kind == "simple"


def test_lexicon_matches_words_stems_and_phrases():
    lexicon = Lexicon(["auth", "vulnerab*", "step by step"])
    text = words_of("Step-by-step: find the vulnerabilities in OAuth and auth.")
    assert lexicon.find(text) == ("step by step", "vulnerabilities", "auth")


def test_gsm8k_prompts_read_as_math(shared_data: Path):
    path = shared_data / "routellm_eval/gsm8k/gsm8k_responses.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        prompts = [row["prompt"] for row in itertools.islice(csv.DictReader(handle), 200)]
    signals = [extract_signals(Request.from_prompt(p)) for p in prompts]
    assert sum(bool(s.math) for s in signals) / len(signals) > 0.8
    assert all(s.long_context_need == 0 and not s.has_code for s in signals)


# --- decisions ----------------------------------------------------------------------------------


def test_file_reads_and_renames_go_to_the_smallest_tier(candidates, context):
    router = RulesRouter()
    for prompt in (FILE_READ, RENAME):
        chosen = _chosen(router, Request.from_prompt(prompt), candidates, context)
        assert chosen.profile.tier == 1
        assert chosen == by_cost(Request.from_prompt(prompt), candidates)[0]


def test_features_and_refactors_go_to_the_medium_tier(candidates, context):
    router = RulesRouter()
    for prompt in (FEATURE, REFACTOR):
        request = Request.from_prompt(prompt)
        decision = router.select(request, candidates, context)
        chosen = context.catalog.get(decision.chosen)
        assert chosen.profile.tier == 3
        tier_three = [c for c in by_cost(request, candidates) if c.profile.tier >= 3]
        assert chosen == tier_three[0]  # the cheapest that meets tier>=3
        assert decision.reason.startswith("rule 'feature' fired (standard task words:")


def test_security_review_goes_to_the_large_tier_and_says_why(candidates, context):
    decision = RulesRouter().select(Request.from_prompt(SECURITY_REVIEW), candidates, context)
    assert context.catalog.get(decision.chosen).profile.tier == 4
    assert decision.reason == (
        "rule 'architecture' fired (security words: auth, security, tokens, password; "
        "files affected: 7) -> needs tier>=4 -> anthropic:claude-opus-4-7, "
        "the cheapest candidate that meets it"
    )
    assert decision.signals["fired"] == ["architecture"]


def test_every_candidate_is_scored_with_cost_and_whether_it_meets(candidates, context):
    request = Request.from_prompt(FEATURE)
    decision = RulesRouter().select(request, candidates, context)
    assert decision.threshold == 1.0
    assert {s.model for s in decision.scores} == set(CANDIDATES)
    by_model = {s.model: s for s in decision.scores}
    for spec in candidates:
        assert by_model[spec.id].predicted_quality == (1.0 if spec.profile.tier >= 3 else 0.0)
        assert by_model[spec.id].predicted_cost is not None
    costs = [s.predicted_cost for s in decision.scores]
    assert costs == sorted(costs)  # listed cheapest first


def test_long_context_summary_needs_long_context_skill_not_a_bigger_tier(candidates, context):
    request = Request.from_prompt(_transcript(40_000))
    decision = RulesRouter().select(request, candidates, context)
    chosen = context.catalog.get(decision.chosen)
    assert chosen.profile.skill("long_context") >= 4 and chosen.profile.tier <= 2
    assert "'long-context' (context tokens: " in decision.reason
    assert "long_context>=4" in decision.reason


def test_a_prompt_larger_than_a_window_skips_that_model(candidates, context):
    request = Request.from_prompt(_transcript(210_000))
    decision = RulesRouter().select(request, candidates, context)
    chosen = context.catalog.get(decision.chosen)
    assert chosen.profile.skill("long_context") == 5
    assert chosen.context_window is not None and chosen.context_window > 210_000
    scores = {s.model: s.predicted_quality for s in decision.scores}
    assert scores["anthropic:claude-opus-4-7"] == 0.0  # long_context 5, but a 200k window


def test_tools_on_offer_require_tool_use(candidates, context):
    tool = Tool(name="read_file", description="Read a file", input_schema={"type": "object"})
    request = Request.from_prompt(FILE_READ, tools=[tool])
    decision = RulesRouter().select(request, candidates, context)
    chosen = context.catalog.get(decision.chosen)
    assert chosen.profile.skill("tool_use") >= 3 and chosen.capabilities.tools
    assert chosen.profile.tier == 2
    assert "rules fired: 'agentic' (tools offered: 1), 'simple'" in decision.reason


def test_sticky_model_is_kept_only_while_it_meets_the_task(catalog, candidates):
    sticky = RouteContext(catalog=catalog, sticky_model="anthropic:claude-sonnet-4-6")
    decision = RulesRouter().select(Request.from_prompt(RENAME), candidates, sticky)
    assert decision.chosen == "anthropic:claude-sonnet-4-6"
    assert "prompt cache warm" in decision.reason
    small = RouteContext(catalog=catalog, sticky_model="openai:gpt-5-nano")
    decision = RulesRouter().select(Request.from_prompt(SECURITY_REVIEW), candidates, small)
    assert catalog.get(decision.chosen).profile.tier == 4


def test_when_no_candidate_meets_it_the_strongest_is_chosen_and_said(catalog, context):
    small = [catalog.get("openai:gpt-5-nano"), catalog.get("anthropic:claude-haiku-4-5")]
    decision = RulesRouter().select(Request.from_prompt(SECURITY_REVIEW), small, context)
    assert decision.chosen == "anthropic:claude-haiku-4-5"
    assert decision.reason.endswith("the strongest candidate, as none meets it")
    assert all(s.predicted_quality == 0.0 for s in decision.scores)


def test_no_candidates_is_a_policy_error(context):
    with pytest.raises(PolicyError, match="no candidate models"):
        RulesRouter().select(Request.from_prompt(RENAME), [], context)


# --- the rule set as data -------------------------------------------------------------------------


def _env(tmp_path: Path, config: str, catalog: Catalog) -> RouterEnv:
    path = tmp_path / "config.toml"
    path.write_text(config, "utf-8")
    settings = load_settings(path)
    return RouterEnv(settings=settings, catalog=catalog, artifacts_dir=tmp_path)


def test_config_rules_go_first_and_replace_shipped_rules_by_name(
    tmp_path, catalog, candidates, context
):
    config = """
[[routing.rules.rule]]
name = "migrations"
when.words = ["alembic", "migration*"]
require = { tier = 4 }

[[routing.rules.rule]]
name = "simple"
when.any = ["task_kind == simple"]
require = { tier = 2, skills = { coding = 3 } }
"""
    router = build({}, _env(tmp_path, config, catalog))
    request = Request.from_prompt("Read the alembic migrations in versions/0001_initial.py")
    decision = router.select(request, candidates, context)
    assert catalog.get(decision.chosen).profile.tier == 4
    assert decision.reason.startswith("rule 'migrations' fired (words: alembic, migrations)")
    read = context.catalog.get(
        router.select(Request.from_prompt(FILE_READ), candidates, context).chosen
    )
    assert read.profile.tier == 2 and read.profile.skill("coding") >= 3
    names = [rule.name for rule in router.rules.rules]
    assert names[0] == "migrations" and names[-1] == "simple"  # same place as the shipped one


def test_config_can_replace_the_whole_rule_set(tmp_path, catalog, candidates, context):
    config = """
[routing.rules]
mode = "replace"
default = { tier = 3 }
"""
    router = build({}, _env(tmp_path, config, catalog))
    decision = router.select(Request.from_prompt(SECURITY_REVIEW), candidates, context)
    assert catalog.get(decision.chosen).profile.tier == 3
    assert decision.reason.startswith("no deciding rule fired, so the default applies")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('when.any = ["filez >= 6"]', "routing rule 'bad': unknown signal 'filez'"),
        ('when.any = ["files_affected >= many"]', "'many' is not an integer"),
        ('when.any = ["task_kind > simple"]', "task_kind is text: compare it with == or !="),
        ("require = { tier = 4, skills = { charm = 5 } }", "unknown skill 'charm'"),
    ],
)
def test_a_bad_rule_is_a_config_error_that_names_it(tmp_path, catalog, rule, message):
    config = f'[[routing.rules.rule]]\nname = "bad"\n{rule}\n'
    with pytest.raises(ConfigError, match=message):
        build({}, _env(tmp_path, config, catalog))


def test_the_rules_router_takes_no_parameters(tmp_path, catalog):
    with pytest.raises(PolicyError, match="router 'rules' does not take 'x'"):
        build({"x": "1"}, _env(tmp_path, "", catalog))


def test_shipped_rules_name_capabilities_never_models():
    rules = compile_rules()
    assert [r.name for r in rules.rules] == [
        "very-long-context",
        "long-context",
        "agentic",
        "architecture",
        "feature",
        "math-reasoning",
        "simple",
    ]
    assert rules.default.tier == 1
