"""The classifier router: a cheap model says which capability a task needs.

Routers are pure, so the model call is not made here. :class:`Classifier` builds the
classifier request (a short prompt, the JSON schema sent as the provider's structured
output), validates the answer and caches it on disk by sha256 of the classifier prompt; the
routing strategy makes the call through its task context (``role="classifier"``, so its
cost is the task's) and hands the answer to :class:`ClassifierRouter` as
``RouteContext.hints["classification"]``. The router maps it to a requirement and picks the
cheapest candidate that meets it; without a usable answer it falls back to the rules.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from tierwise.catalog import ModelSpec
from tierwise.catalog.spec import SKILLS
from tierwise.config import Settings
from tierwise.errors import MalformedResponseError, ProviderError
from tierwise.messages import Message, Request, Response, TextBlock
from tierwise.routing.base import Decision, RouteContext
from tierwise.routing.choose import Requirement, check_params
from tierwise.routing.registry import RouterEnv
from tierwise.routing.rules import RulesRouter, Verdict, compile_rules, decide
from tierwise.routing.signals import Signals, task_text

ROUTER_NAME = "classifier"
SCHEMA_VERSION = "1"
CLASSIFIER_SKILLS = tuple(skill for skill in SKILLS if skill != "speed")
TaskKind = Literal["simple", "standard", "complex"]
KIND_TIERS: dict[str, int] = {"simple": 1, "standard": 3, "complex": 4}
MAX_TASK_CHARS = 6000
MAX_ANSWER_TOKENS = 1024
MEMORY_ENTRIES = 4096

CLASSIFICATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "task_kind": {"type": "string", "enum": list(KIND_TIERS)},
        "skills": {
            "type": "object",
            "properties": {
                s: {"type": "integer", "enum": [1, 2, 3, 4, 5]} for s in CLASSIFIER_SKILLS
            },
            "required": list(CLASSIFIER_SKILLS),
            "additionalProperties": False,
        },
    },
    "required": ["task_kind", "skills"],
    "additionalProperties": False,
}

SYSTEM_PROMPT = """\
You triage tasks for a model router. Do not do the task: say what capability it needs.
task_kind: "simple" = file reads, searches, renames, formatting, lookups, short summaries;
"standard" = features, refactors, tests, debugging, multi-step math or analysis;
"complex" = architecture, security, performance, changes across many files, proofs, research.
skills: the level each skill must reach, 1 (trivial) to 5 (frontier): reasoning, coding, math,
long_context, tool_use, writing. Most tasks need 1-3; give 4-5 only when it is truly hard.
Answer with JSON that matches the schema, nothing else."""


class Classification(BaseModel):
    """A classifier model's answer: the task kind and the skill levels it needs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_kind: TaskKind
    skills: dict[str, int]

    @field_validator("skills")
    @classmethod
    def _levels(cls, skills: dict[str, int]) -> dict[str, int]:
        for name, level in skills.items():
            if name not in CLASSIFIER_SKILLS:
                raise ValueError(f"unknown skill {name!r}")
            if not 1 <= level <= 5:
                raise ValueError(f"skill {name} must be 1 to 5, got {level}")
        return skills

    def requirement(self) -> Requirement:
        needed = {name: level for name, level in self.skills.items() if level > 1}
        return Requirement(tier=KIND_TIERS[self.task_kind], skills=needed)

    def describe(self) -> str:
        """E.g. ``kind 'complex'; reasoning 5, coding 4``."""
        levels = ", ".join(f"{n} {v}" for n, v in self.skills.items() if v > 1)
        return f"kind '{self.task_kind}'" + (f"; {levels}" if levels else "")


class ClassifierAnswer(BaseModel):
    """What the strategy learned: a classification (``None`` when unusable) and its source."""

    model: str
    source: Literal["cache", "model", "error"]
    classification: Classification | None = None
    note: str = ""


def _unfenced(text: str) -> str:
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[-1].rsplit("```", 1)[0]
    return body.strip()


def parse_classification(text: str, spec: ModelSpec) -> Classification:
    """The validated answer; MalformedResponseError naming what is wrong otherwise."""
    try:
        return Classification.model_validate(json.loads(_unfenced(text)))
    except json.JSONDecodeError as exc:
        problem = f"not JSON ({exc.msg})"
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "answer"
        problem = f"{where}: {error['msg'].removeprefix('Value error, ')}"
    raise MalformedResponseError(
        f"classifier answer unusable: {problem}", provider=spec.provider, model=spec.name
    )


class ClassificationCache:
    """Classifications by sha256 key: in memory, and one small JSON file each on disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._memory: dict[str, Classification] = {}

    @staticmethod
    def key(model_id: str, prompt: str) -> str:
        return hashlib.sha256(f"{SCHEMA_VERSION}\0{model_id}\0{prompt}".encode()).hexdigest()

    def get(self, key: str) -> Classification | None:
        if key in self._memory:
            return self._memory[key]
        try:
            found = Classification.model_validate_json(
                (self.directory / f"{key}.json").read_bytes()
            )
        except (OSError, ValidationError):
            return None  # absent or damaged: a miss
        self._remember(key, found)
        return found

    def put(self, key: str, classification: Classification) -> None:
        """Keep it; a disk that cannot be written only costs a later miss."""
        self._remember(key, classification)
        path = self.directory / f"{key}.json"
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary.write_text(classification.model_dump_json(), "utf-8")
            os.replace(temporary, path)

    def _remember(self, key: str, classification: Classification) -> None:
        if len(self._memory) >= MEMORY_ENTRIES:
            self._memory.clear()
        self._memory[key] = classification


Ask = Callable[[Request, ModelSpec], Awaitable[Response]]
"""Calls a model (the strategy passes its task context's ``call``)."""


def default_classifier_model(candidates: Sequence[ModelSpec]) -> ModelSpec:
    """The candidate with the lowest list price (input + output), priced ones first."""

    def price(spec: ModelSpec) -> tuple[bool, Decimal, int]:
        known = spec.prices.input is not None and spec.prices.output is not None
        total = (spec.prices.input or Decimal(0)) + (spec.prices.output or Decimal(0))
        return (not known, total, spec.profile.tier)

    return min(candidates, key=price)


class Classifier:
    """Asks a cheap model what a task needs, in structured output; caches the answers."""

    def __init__(self, spec: ModelSpec, cache: ClassificationCache, settings: Settings) -> None:
        self.spec = spec
        self.cache = cache
        self.settings = settings

    def prompt(self, request: Request) -> str:
        task = task_text(request.messages)
        if len(task) > MAX_TASK_CHARS:
            head = MAX_TASK_CHARS * 3 // 4
            task = f"{task[:head]}\n[…]\n{task[-(MAX_TASK_CHARS - head) :]}"
        tools = f"\nTools offered: {len(request.tools)}." if request.tools else ""
        return f"<task>\n{task}\n</task>{tools}"

    def request(self, prompt: str) -> Request:
        """The classifier request, with the schema as this provider's structured output."""
        message = Message(role="user", content=[TextBlock(text=prompt)])
        return Request(
            messages=[message],
            system=[TextBlock(text=SYSTEM_PROMPT)],
            max_tokens=MAX_ANSWER_TOKENS,
            **self._structured_output(),
        )

    def _structured_output(self) -> dict[str, Any]:
        spec = self.spec
        row = self.settings.providers.get(spec.provider)
        if row is not None and row.kind == "anthropic":
            output = {"format": {"type": "json_schema", "schema": CLASSIFICATION_SCHEMA}}
            return {"origin": "anthropic", "extra": {"output_config": output}}
        if row is not None and row.kind == "openai":
            schema = {"name": "task_capability", "strict": True, "schema": CLASSIFICATION_SCHEMA}
            extra: dict[str, Any] = {
                "response_format": {"type": "json_schema", "json_schema": schema}
            }
            return {"origin": "openai", "extra": extra}
        return {}

    async def classify(self, request: Request, ask: Ask) -> ClassifierAnswer:
        """The cached classification, else the model's; an unusable answer says why."""
        spec = self.spec
        prompt = self.prompt(request)
        key = self.cache.key(spec.id, prompt)
        if (cached := self.cache.get(key)) is not None:
            return ClassifierAnswer(model=spec.id, source="cache", classification=cached)
        try:
            response = await ask(self.request(prompt), spec)
            classification = parse_classification(response.text(), spec)
        except ProviderError as exc:
            return ClassifierAnswer(model=spec.id, source="error", note=exc.message)
        self.cache.put(key, classification)
        return ClassifierAnswer(model=spec.id, source="model", classification=classification)


def _long_context(signals: Signals) -> Requirement:
    level = {1: 4, 2: 5}.get(signals.long_context_need)
    return Requirement(skills={"long_context": level} if level else {})


class ClassifierRouter:
    """Maps the classifier's answer to the cheapest candidate that meets it (pure)."""

    name = ROUTER_NAME

    def __init__(
        self,
        model: ModelSpec | None,
        cache: ClassificationCache,
        settings: Settings,
        fallback: RulesRouter,
    ) -> None:
        self.model = model
        self.cache = cache
        self.settings = settings
        self.fallback = fallback

    def classifier(self, candidates: Sequence[ModelSpec]) -> Classifier:
        """The model-calling half, for the strategy; its model defaults to the cheapest
        candidate."""
        model = self.model or default_classifier_model(candidates)
        return Classifier(model, self.cache, self.settings)

    def select(
        self, request: Request, candidates: Sequence[ModelSpec], context: RouteContext
    ) -> Decision:
        signals, verdict = self.fallback.verdict(request)
        answer = context.hints.get("classification")
        if not isinstance(answer, ClassifierAnswer) or answer.classification is None:
            note = answer.note if isinstance(answer, ClassifierAnswer) else "none was made"
            why = f"no classification ({note}); the rules decide: {verdict.explain()}"
            return decide(
                self.name, request, candidates, context, signals=signals, verdict=verdict, why=why
            )
        said = answer.classification
        needed = said.requirement().merged(_long_context(signals))
        mine = Verdict(needed, [("classifier", [said.describe()])], ROUTER_NAME)
        origin = "cached answer" if answer.source == "cache" else "answer"
        why = f"classifier {answer.model} ({origin}) says {said.describe()}"
        decision = decide(
            self.name, request, candidates, context, signals=signals, verdict=mine, why=why
        )
        extra = {"classification": said.model_dump(), "classifier_source": answer.source}
        return decision.model_copy(update={"signals": decision.signals | extra})


def build(params: Mapping[str, str], env: RouterEnv) -> ClassifierRouter:
    """``route:classifier?model=openai:gpt-5-nano`` (default model: the cheapest candidate)."""
    check_params(ROUTER_NAME, params, ("model",))
    spec = env.catalog.get(params["model"]) if "model" in params else None
    cache = ClassificationCache(env.settings.cache_dir / "classifier")
    fallback = RulesRouter(compile_rules(env.settings.routing.rules))
    return ClassifierRouter(spec, cache, env.settings, fallback)
