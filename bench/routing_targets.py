"""Every routing target of issue 3, measured on the real recorded outcomes, in one run.

Mean ± sd over 5 seeded splits (RouterBench: its own test split, 5 train/validation seeds),
each figure beside its target, marked MET or MISSED (and by how much):

- RouteLLM GSM8K, held out: savings at 95% of GPT-4's quality (>= 50%) for the TF-IDF
  baseline, the learned router (``target`` and ``lambda`` rules) and the cascades (cheap
  answer -> deterministic gates -> escalate), the gain of each gate, and the deployable
  figure of ``cascade+learned`` (threshold picked on validation, applied to test);
- RouteLLM MMLU, held out: savings at 95% (>= 60%), from a timed ``tierwise eval`` over all
  14k prompts with the embedding cache warm (< 90 s);
- RouterBench slice: routed cost as a share of GPT-4's at 98% (<= 35%) and at 100%
  (<= 60%) of its accuracy;
- latency: rules decision (< 0.2 ms p50), learned decision with a cached embedding
  (< 1 ms), MiniLM on a 500-token prompt (< 20 ms p50).

Every scorer is shown under its three rules: ``target``, ``@lambda`` (mean cost per model)
and ``@dollar`` (each prompt's predicted dollars). ``category=1`` rows (``+cat``) blend in
per-category success rates — the MMLU subject or RouterBench's benchmark, standing for
request metadata; MMLU's prompt text does not name its subject.

Savings and costs are read off the held-out test curve, as RouteLLM and ``tierwise eval``
do (the deployable rows say what a threshold chosen beforehand gives: on the validation
split, or on out-of-fold predictions over train + validation, ``calibrate(folds=5)``). Usage:

    .venv/bin/python bench/routing_targets.py [--data-dir ../shared/data] [--seeds 5]
        [--cache-dir DIR] [--skip gsm8k,mmlu,routerbench,latency]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tierwise.catalog import Catalog, load_catalog
from tierwise.config import load_settings, user_cache_dir
from tierwise.evaluation import cascade, metrics
from tierwise.evaluation.gates import GATES
from tierwise.evaluation.harness import EvalReport, RouterResult, Stat, evaluate
from tierwise.evaluation.loaders import load_matrix
from tierwise.evaluation.matrix import OutcomeMatrix
from tierwise.evaluation.scorers import parse_scorer
from tierwise.messages import Request
from tierwise.routing.base import RouteContext
from tierwise.routing.calibrate import cross_fitted
from tierwise.routing.costmodel import CostModel
from tierwise.routing.embeddings import MiniLMEmbedder
from tierwise.routing.learned import LearnedRouter, LearnedScorer, Rule, make_predictor
from tierwise.routing.registry import RouterEnv, router_factory

DATA = Path(os.environ.get("TIERWISE_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data"))
CANDIDATES = (
    "openai:gpt-5-nano",
    "anthropic:claude-haiku-4-5",
    "openai:gpt-4.1-mini",
    "anthropic:claude-sonnet-4-6",
    "openai:gpt-4.1",
    "anthropic:claude-opus-4-7",
)
"""The rules router's candidates: tiers 1-4 of the shipped catalog (as bench/router_latency.py)."""
MMLU_CATEGORY = "learned?category=1"
ROUTERBENCH = ["learned?estimator=knn", "learned?estimator=knn&category=1"]
"""kNN on MiniLM; with the benchmark of origin (ARC, MBPP, Winogrande) as request metadata."""
GSM8K_ROUTERS = ["tfidf", "learned", "cascade", "cascade+tfidf", "cascade+learned"]
GATE_SETS = [
    "none",
    "answer",
    "arithmetic",
    "consistency",
    "answer+arithmetic",
    "answer+consistency",
    "arithmetic+consistency",
    "answer+arithmetic+consistency",
]


# --- printing ---------------------------------------------------------------------------------


def pm(mean: float, sd: float, unit: str = "%", scale: float = 100.0) -> str:
    return f"{mean * scale:6.1f}{unit} ± {sd * scale:4.1f}"


def mark(value: float, target: float, higher: bool, unit: str = " points") -> str:
    if value >= target if higher else value <= target:
        return "MET"
    places = 3 if unit.strip() == "ms" else 1
    return f"MISSED by {abs(value - target):.{places}f}{unit}"


def line(
    label: str, mean: float, sd: float, target: float | None = None, higher: bool = True
) -> None:
    text = f"  {label:<46}{pm(mean, sd)}"
    if target is not None:
        text += f"   {mark(mean * 100, target, higher)}"
    print(text, flush=True)


def of(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def savings(result: RouterResult) -> tuple[float, float]:
    stat: Stat | None = result.savings_fraction
    return (0.0, 0.0) if stat is None else (stat.mean, stat.sd)


# --- GSM8K: routers, cascades, gates --------------------------------------------------------


def gsm8k(data_dir: Path, cache_dir: Path, seeds: int) -> None:
    matrix = load_matrix("routellm-gsm8k", data_dir=data_dir, cache_dir=cache_dir)
    ablation = [f"cascade+learned?gates={gates}" for gates in GATE_SETS[:-1]]
    started = time.perf_counter()
    report = evaluate(matrix, GSM8K_ROUTERS + ablation, seeds=range(seeds))
    took = time.perf_counter() - started
    print(
        f"\nRouteLLM GSM8K ({len(matrix):,} prompts, {report.test_prompts:.0f} held out per "
        f"seed): $ saved vs all-GPT-4 at 95% of its quality; target >= 50% (RouteLLM 35%, "
        f"TF-IDF ~25%) [{took:.0f} s, {len(GSM8K_ROUTERS) + len(ablation)} routers]"
    )
    rows = {r.name: r for r in report.results}
    for name in [*rows_of("tfidf"), *rows_of("learned"), *GSM8K_ROUTERS[2:]]:
        line(name, *savings(rows[name]), target=50.0)
    strictest(rows["cascade"])
    print("  what each gate adds (cascade+learned; gates=none is learned@lambda):")
    base = savings(rows["cascade+learned?gates=none"])[0]
    for gates in GATE_SETS:
        name = "cascade+learned" if gates == GATE_SETS[-1] else f"cascade+learned?gates={gates}"
        mean, sd = savings(rows[name])
        print(f"    {gates:<44}{pm(mean, sd)}   {100 * (mean - base):+5.1f} points")
    deployable(matrix, cache_dir, seeds)


def strictest(result: RouterResult) -> None:
    """Where the gates alone get to: every gate required, failures escalated."""
    # a cascade's closed curve ends: strictest threshold, nothing accepted, all-on-strongest
    quality = [c.quality[-3] / c.quality[-1] for c in result.curves]
    cost = [c.cost_usd[-3] / c.cost_usd[-1] for c in result.curves]
    print(
        f"    (cascade, gates only, every gate required: quality {pm(*of(quality))} of "
        f"GPT-4's at {pm(*of(cost))} of its cost)"
    )


def deployable(matrix: OutcomeMatrix, cache_dir: Path, seeds: int) -> None:
    """The threshold reaching 95% on validation (out-of-sample predictions), on test."""
    found: dict[str, list[tuple[float, float]]] = {"none": [], "all three": []}
    for seed in range(seeds):
        train, val, test = matrix.splits(seed)
        predictor = make_predictor(
            matrix.models, estimator="logreg", embedder="minilm", cache_dir=cache_dir
        )
        held_out = predictor.fit(train, val)
        predicted = predictor.predict(test.prompts)
        ladder = cascade.Ladder(
            cheap=int(np.argmin(train.cost.mean(axis=0))), strong=train.strongest()
        )
        for label, gates in (("none", []), ("all three", list(GATES))):
            threshold = _picked(val, held_out, ladder, gates)
            found[label].append(_on_test(test, predicted, ladder, gates, threshold))
    print("  deployable (threshold for 95% picked on validation, applied to test):")
    for label, pairs in found.items():
        quality, saved = of([p[0] for p in pairs]), of([p[1] for p in pairs])
        print(
            f"    cascade+learned gates={label:<10} quality {pm(*quality)} of GPT-4's, "
            f"saved {pm(*saved)}"
        )


def _gated(
    part: OutcomeMatrix, predicted: np.ndarray, ladder: cascade.Ladder, gates: list[str]
) -> cascade.Gated:
    assert part.responses is not None
    gate = cascade.gate_scores([r[ladder.cheap] for r in part.responses], gates)
    cheap, strong = predicted[:, ladder.cheap], predicted[:, ladder.strong]
    return cascade.Gated(score=gate * cheap - strong, ceiling=cheap - strong)


def _picked(
    val: OutcomeMatrix, held_out: np.ndarray, ladder: cascade.Ladder, gates: list[str]
) -> float:
    curve = cascade.sweep(_gated(val, held_out, ladder, gates), ladder, val.quality, val.cost)
    floor = 0.95 * val.quality[:, ladder.strong].mean() - 1e-12
    ok = np.flatnonzero(curve.quality >= floor)
    return float(curve.thresholds[ok[np.argmin(curve.cost[ok])]]) if len(ok) else np.inf


def _on_test(
    test: OutcomeMatrix,
    predicted: np.ndarray,
    ladder: cascade.Ladder,
    gates: list[str],
    threshold: float,
) -> tuple[float, float]:
    gated = _gated(test, predicted, ladder, gates)
    quality, cost, _ = cascade.outcome(gated, ladder, test.quality, test.cost, threshold)
    strong_q = test.quality[:, ladder.strong].mean()
    return quality / strong_q, 1 - cost / test.cost[:, ladder.strong].sum()


# --- the @dollar rule, deployable: lambda picked on validation -----------------------------


def rows_of(spec: str) -> list[str]:
    """A threshold router's three curves: target, lambda on mean cost, lambda on this
    prompt's predicted dollars."""
    return [spec, f"{spec}@lambda", f"{spec}@dollar"]


def short(name: str) -> str:
    return name.replace("estimator=", "").replace("&category=1", "+cat").replace("?", ":")


def deployable_dollar(
    matrix: OutcomeMatrix, spec: str, seeds: int, levels: tuple[float, ...], folds: int = 5
) -> None:
    """Fit on train (validation predictions out of sample), pick the cheapest lambda of the
    @dollar rule reaching each level of the strongest's quality — on validation, or on
    ``folds``-fold cross-fitted predictions over train + validation — and apply it to test:
    quality and cost as shares of the strongest's there."""
    how = {"validation": "on validation", "cv": f"by {folds}-fold CV"}
    found: dict[tuple[str, float], list[tuple[float, float]]] = {}
    by_category = "category=1" in spec
    for seed in range(seeds):
        train, val, test = matrix.splits(seed)
        scorer = LearnedScorer(parse_scorer(spec)[1])
        predictor = scorer._predictor(train.models)
        held_out = predictor.fit(train, val, categories=by_category)
        predicted = predictor.predict(test.prompts, categories=test.categories)
        costs = CostModel().fit(train.prompts, train.cost)
        pool = OutcomeMatrix.concat([train, val])
        pooled = cross_fitted(
            pool,
            functools.partial(scorer._predictor, train.models),
            folds=folds,
            seed=seed,
            categories=by_category,
        )
        strong = train.strongest()
        for level in levels:
            for key, (part, pred) in {"validation": (val, held_out), "cv": (pool, pooled)}.items():
                lam = _lambda_on(pred, costs.penalty(part.prompts), part, strong, level)
                chosen = metrics.route_lambda(predicted, costs.penalty(test.prompts), lam)
                quality, cost, _ = metrics.outcome(chosen, test.quality, test.cost)
                found.setdefault((key, level), []).append(
                    (quality / test.quality[:, strong].mean(), cost / test.cost[:, strong].sum())
                )
    for (key, level), pairs in found.items():
        reached, spent = of([q for q, _ in pairs]), of([c for _, c in pairs])
        print(
            f"    {short(spec) + '@dollar':<26} for {level:.0%}, lambda {how[key]:<15} quality "
            f"{pm(*reached)} of the strongest's at {pm(*spent)} of its cost "
            f"(saved {pm(1 - spent[0], spent[1])})"
        )


def _lambda_on(
    predicted: np.ndarray, penalty: np.ndarray, val: OutcomeMatrix, strong: int, level: float
) -> float:
    curve = metrics.sweep_lambda(predicted, val.quality, val.cost, penalty)
    ok = np.flatnonzero(curve.quality >= level * val.quality[:, strong].mean() - 1e-12)
    return float(curve.thresholds[ok[np.argmin(curve.cost[ok])]]) if len(ok) else 0.0


# --- MMLU: a timed `tierwise eval` with the embedding cache warm ------------------------------


def mmlu(data_dir: Path, cache_dir: Path, seeds: int) -> None:
    matrix = load_matrix("routellm-mmlu", data_dir=data_dir, cache_dir=cache_dir)
    print(f"\nRouteLLM MMLU ({len(matrix):,} prompts): warming the embedding cache ...", flush=True)
    make_predictor(matrix.models, embedder="minilm", cache_dir=cache_dir).embedder.embed(
        matrix.prompts
    )
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "mmlu.json"
        command = [
            sys.executable,
            "-m",
            "tierwise",
            "eval",
            "routellm-mmlu",
            "--routers",
            "tfidf,learned",
            "--seeds",
            str(seeds),
            "--data-dir",
            str(data_dir),
            "--json",
            str(out),
        ]
        env = {**os.environ, "TIERWISE_CACHE_DIR": str(cache_dir), "COLUMNS": "200"}
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, capture_output=True)
        took = time.perf_counter() - started
        report = EvalReport.model_validate(json.loads(out.read_text()))
    print(
        f"  $ saved vs all-GPT-4 at 95% of its quality, {report.test_prompts:.0f} held out "
        "per seed; target >= 60% (RouteLLM 45%, TF-IDF ~47%)"
    )
    rows = {r.name: r for r in report.results}
    for name in rows_of("tfidf") + rows_of("learned"):
        line(name, *savings(rows[name]), target=60.0)
    verdict = mark(took, 90.0, higher=False, unit=" s")
    print(
        f"  `tierwise eval routellm-mmlu --routers tfidf,learned --seeds {seeds}`, warm cache:"
        f" {took:.1f} s   {verdict} (target < 90 s)"
    )
    print("  with the subject as request metadata (category=1: a per-subject prior blended in):")
    by_subject = evaluate(matrix, [MMLU_CATEGORY], seeds=range(seeds))
    rows = {r.name: r for r in by_subject.results}
    for name in rows_of(MMLU_CATEGORY):
        line(short(name), *savings(rows[name]), target=60.0)
    print(
        "  deployable (lambda for 95% picked beforehand: on validation, or on 5-fold cross-fitted"
        " predictions over train + validation; applied to test; @dollar rule):"
    )
    for spec in ("learned", MMLU_CATEGORY):
        deployable_dollar(matrix, spec, seeds, levels=(0.95,))


# --- RouterBench: cost at GPT-4's accuracy ----------------------------------------------------


def routerbench(data_dir: Path, cache_dir: Path, seeds: int) -> None:
    matrix = load_matrix("routerbench", data_dir=data_dir, cache_dir=cache_dir)
    report = evaluate(matrix, ["tfidf", "learned", *ROUTERBENCH], seeds=range(seeds))
    rows = {r.name: r for r in report.results}
    strongest = rows[report.strongest]  # one fixed test split: the same point every seed
    q_strong, c_strong = strongest.quality.mean, strongest.cost_usd.mean
    print(
        f"\nRouterBench slice ({report.test_prompts:.0f} test prompts, 11 models): routed $ as "
        f"a share of all-GPT-4 (accuracy {q_strong:.3f}); targets <= 35% at 98% of its "
        "accuracy, <= 60% at 100% (TF-IDF: 98% at 52%)"
    )
    for name in [row for spec in ["tfidf", "learned", *ROUTERBENCH] for row in rows_of(spec)]:
        for level, target in ((0.98, 35.0), (1.0, 60.0)):
            shares = [
                _share_at(curve.quality, curve.cost_usd, level * q_strong) / c_strong
                for curve in rows[name].curves
            ]
            label = f"{short(name)} at {level:.0%} of GPT-4's"
            reached = [v for v in shares if np.isfinite(v)]
            if len(reached) < len(shares):
                print(
                    f"  {label:<46}not reached on {len(shares) - len(reached)} of "
                    f"{len(shares)} seeds   MISSED"
                )
            else:
                line(label, *of(reached), target, higher=False)
    print(
        "  deployable (lambda picked on validation or by 5-fold cross-fitting over train +"
        " validation, applied to the test split):"
    )
    for spec in ROUTERBENCH:
        deployable_dollar(matrix, spec, seeds, levels=(0.98, 1.0))


def _share_at(quality: list[float], cost: list[float], floor: float) -> float:
    q, c = np.array(quality), np.array(cost)
    reach = q >= floor - 1e-9
    return float(c[reach].min()) if reach.any() else float("inf")


# --- latency ------------------------------------------------------------------------------


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


def timing(label: str, values: list[float], target_ms: float) -> None:
    p50 = p(values, 50)
    verdict = mark(p50, target_ms, higher=False, unit=" ms")
    print(
        f"  {label:<46}{p50:8.3f} ms p50, {p(values, 99):7.3f} ms p99   {verdict} "
        f"(< {target_ms:g} ms)"
    )


def latency(data_dir: Path, cache_dir: Path) -> None:
    matrix = load_matrix("routellm-gsm8k", data_dir=data_dir, cache_dir=cache_dir)
    catalog = load_catalog()
    print("\nRouter decision latency (2-core CPU, p50 / p99):")
    _rules(matrix, catalog)
    embedder = MiniLMEmbedder()
    text = _long_prompt(matrix, embedder, 500)
    tokens = len(embedder.model.tokenizer(text, verbose=False)["input_ids"])
    timings = [_timed(lambda: embedder.embed([text])) for _ in range(65)][5:]
    timing(f"MiniLM embedding, a {tokens}-token prompt", timings, 20.0)
    train, val, _ = matrix.splits(0)
    predictor = make_predictor(
        matrix.models, estimator="logreg", embedder="minilm", cache_dir=cache_dir
    )
    predictor.fit(train, val)
    router = LearnedRouter(predictor, Rule(kind="target", threshold=0.7), "bench")
    candidates = [catalog.get(model) for model in matrix.models if model in catalog]
    request, context = Request.from_prompt(text), RouteContext(catalog=catalog)
    router.select(request, candidates, context)  # the one encode; cached from now on
    decisions = [_timed(lambda: router.select(request, candidates, context)) for _ in range(2000)]
    timing("learned decision, cached embedding", decisions, 1.0)


def _rules(matrix: OutcomeMatrix, catalog: Catalog) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        settings = load_settings(None, cache_dir=Path(scratch))
        env = RouterEnv(settings=settings, catalog=catalog, artifacts_dir=Path(scratch))
        router = router_factory("rules")({}, env)
        candidates = [catalog.get(model_id) for model_id in CANDIDATES]
        requests = [Request.from_prompt(prompt) for prompt in matrix.prompts]
        context = RouteContext(catalog=catalog)
        runs = [
            [_timed(functools.partial(router.select, r, candidates, context)) for r in requests]
            for _ in range(3)
        ]
        best = min(runs, key=statistics.median)
        timing(f"rules decision, {len(requests):,} GSM8K prompts", best, 0.2)


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def _long_prompt(matrix: OutcomeMatrix, embedder: MiniLMEmbedder, tokens: int) -> str:
    text = ""
    for prompt in matrix.prompts:
        text += prompt + "\n"
        if len(embedder.model.tokenizer(text, verbose=False)["input_ids"]) >= tokens:
            break
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--cache-dir", type=Path, default=user_cache_dir())
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--skip", default="", help="comma-separated: gsm8k,mmlu,routerbench,latency"
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    started = time.perf_counter()
    print(f"issue 3 routing targets on {args.data_dir}, {args.seeds} seeds (mean ± sd)")
    for name, run in (("gsm8k", gsm8k), ("mmlu", mmlu), ("routerbench", routerbench)):
        if name not in skip:
            run(args.data_dir, args.cache_dir, args.seeds)
    if "latency" not in skip:
        latency(args.data_dir, args.cache_dir)
    print(f"\n(whole run {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
