"""Which task kinds escalate, and are the rules too aggressive or too timid?

Over the live tasks of a window (top-level, not shadow re-runs), per task kind:

* **escalation rate** — the share of tasks that climbed to another model (retries on the
  same model are not escalations, though they do count as failures there);
* **too aggressive** — tasks sent to the cheapest tier fail there (escalate or are labelled
  wrong) more often than ``max_cheap_failure``: the 95% interval's *lower* bound is above it;
* **too timid** — tasks started above the cheapest tier although the cheapest tier answers
  this kind right: the lower bound of its pass rate is at least ``min_cheap_pass``, either
  over every cheapest-tier label of the kind (any source, shadow re-runs included) or over
  the very prompts those dearer tasks carried (*avoidable*: the cheapest tier passed them).

A verdict needs ``min_samples`` observations behind it; below that the kind says so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from pydantic import BaseModel

from tierwise.catalog import Catalog
from tierwise.learning.kinds import TaskKind
from tierwise.learning.labels import Label, TaskBundle
from tierwise.learning.stats import Rate, rate

Verdict = Literal["too aggressive", "too timid", "ok", "not enough data"]


class Thresholds(BaseModel):
    max_cheap_failure: float = 0.3
    min_cheap_pass: float = 0.8
    min_samples: int = 20


class KindFigures(BaseModel):
    kind: str
    tasks: int
    escalated: Rate
    cheap_starts: int
    cheap_failed: Rate
    """Of the cheap-tier starts whose fate is known: those that failed there."""
    cheap_pass: Rate
    """Every label of a cheapest-tier model on this kind: those that were right."""
    dear_starts: int
    avoidable: Rate
    """Of the tasks started above the cheapest tier whose prompt has a cheapest-tier label:
    those the cheapest tier passed (most of its labels on that prompt right)."""
    verdict: Verdict
    why: str


class KindsReport(BaseModel):
    cheapest_tier: int | None
    tasks: int
    escalated: Rate
    by_rule: list[KindFigures]
    by_words: list[KindFigures]


class _Group:
    """The tallies of one kind."""

    def __init__(self) -> None:
        self.tasks = self.escalated = self.cheap_starts = self.cheap_known = 0
        self.cheap_failures = self.dear_starts = self.dear_known = self.avoidable = 0
        self.cheap_labels: list[bool] = []


class _Tally:
    def __init__(
        self, labels: Sequence[Label], catalog: Catalog, kind_of: Callable[[str], str]
    ) -> None:
        self.catalog = catalog
        self.kind_of = kind_of
        self.by_call = {label.call.id: label for label in labels}
        tiers = [t for t in (self.tier_of(label.model) for label in labels) if t is not None]
        self.cheapest = min(tiers, default=None)
        self.cheap_verdicts: dict[str, list[bool]] = defaultdict(list)
        self.groups: dict[str, _Group] = defaultdict(_Group)
        for label in labels:
            if self.cheap(label.model):
                self.cheap_verdicts[label.prompt].append(label.correct)
                self.groups[kind_of(label.prompt)].cheap_labels.append(label.correct)

    def tier_of(self, model: str) -> int | None:
        spec = self.catalog.find(model)
        return None if spec is None else spec.profile.tier

    def cheap(self, model: str) -> bool:
        return self.cheapest is not None and self.tier_of(model) == self.cheapest

    def add(self, bundle: TaskBundle) -> None:
        prompt, calls = bundle.prompt, bundle.executors
        if not prompt or not calls:
            return
        group = self.groups[self.kind_of(prompt)]
        group.tasks += 1
        group.escalated += bundle.climbed
        first = self.tier_of(calls[0].model)
        if self.cheap(calls[0].model):
            self._cheap_start(group, bundle)
        elif self.cheapest is not None and first is not None and first > self.cheapest:
            group.dear_starts += 1
            if verdicts := self.cheap_verdicts.get(prompt):
                group.dear_known += 1
                group.avoidable += sum(verdicts) * 2 > len(verdicts)

    def _cheap_start(self, group: _Group, bundle: TaskBundle) -> None:
        group.cheap_starts += 1
        first = bundle.executors[0]
        left = any(e.from_model == first.model for e in bundle.escalations)
        label = self.by_call.get(first.id)
        if left or label is not None:
            group.cheap_known += 1
            group.cheap_failures += left or (label is not None and not label.correct)


def _verdict(
    group: _Group, failed: Rate, passed: Rate, avoidable: Rate, limits: Thresholds
) -> tuple[Verdict, str]:
    if failed.enough(limits.min_samples) and failed.low > limits.max_cheap_failure:
        return "too aggressive", (
            f"the cheapest tier failed {failed} of the tasks sent to it, above the "
            f"{limits.max_cheap_failure:.0%} limit: send this kind a tier up"
        )
    timid = [
        r for r in (passed, avoidable)
        if r.enough(limits.min_samples) and r.low >= limits.min_cheap_pass
    ]  # fmt: skip
    if group.dear_starts and timid:
        return "too timid", (
            f"{group.dear_starts} tasks started above the cheapest tier, yet it passes "
            f"{passed} of this kind's labelled prompts and {avoidable} of those tasks' own: "
            "start it lower"
        )
    if failed.enough(limits.min_samples) or passed.enough(limits.min_samples):
        return "ok", f"the cheapest tier failed {failed} of its tasks and passes {passed}"
    return "not enough data", (
        f"{max(failed.n, passed.n)} labelled cheap-tier answers (need {limits.min_samples})"
    )


def _figures(kind: str, group: _Group, limits: Thresholds) -> KindFigures:
    failed = rate(group.cheap_failures, group.cheap_known)
    passed = rate(sum(group.cheap_labels), len(group.cheap_labels))
    avoidable = rate(group.avoidable, group.dear_known)
    verdict, why = _verdict(group, failed, passed, avoidable, limits)
    return KindFigures(
        kind=kind,
        tasks=group.tasks,
        escalated=rate(group.escalated, group.tasks),
        cheap_starts=group.cheap_starts,
        cheap_failed=failed,
        cheap_pass=passed,
        dear_starts=group.dear_starts,
        avoidable=avoidable,
        verdict=verdict,
        why=why,
    )


def _by(
    kind_of: Callable[[str], str],
    bundles: Sequence[TaskBundle],
    labels: Sequence[Label],
    catalog: Catalog,
    limits: Thresholds,
) -> tuple[_Tally, list[KindFigures]]:
    tally = _Tally(labels, catalog, kind_of)
    for bundle in bundles:
        tally.add(bundle)
    rows = [_figures(kind, group, limits) for kind, group in tally.groups.items()]
    rows.sort(key=lambda row: (-row.escalated.value, -row.tasks, row.kind))
    return tally, rows


def kinds_report(
    bundles: Iterable[TaskBundle],
    labels: Sequence[Label],
    catalog: Catalog,
    kind_of: Callable[[str], TaskKind],
    limits: Thresholds | None = None,
) -> KindsReport:
    """Escalation and cheap-tier figures per rule and per task-word kind, most escalated
    first."""
    limits = limits or Thresholds()
    live = [b for b in bundles if b.live and b.executors and b.prompt]
    tally, by_rule = _by(lambda p: kind_of(p).rule, live, labels, catalog, limits)
    _, by_words = _by(lambda p: kind_of(p).words, live, labels, catalog, limits)
    escalated = sum(b.climbed for b in live)
    return KindsReport(
        cheapest_tier=tally.cheapest,
        tasks=len(live),
        escalated=rate(escalated, len(live)),
        by_rule=by_rule,
        by_words=by_words,
    )
