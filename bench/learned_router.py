"""The learned router on real recorded outcomes: savings, cost at GPT-4 accuracy, latency.

Side by side in one run, over 5 seeded splits (mean ± sd):

- RouteLLM GSM8K and MMLU: dollar savings against all-GPT-4 at 95% of GPT-4's quality on
  the held-out test split, read off the test curve (as RouteLLM and ``tierwise eval`` do),
  for every estimator on MiniLM embeddings and for the TF-IDF baseline, under both decision
  rules (``target``: the harness's threshold rule; ``lambda``: quality - lambda x cost);
  plus the deployable figure of the learned router: the threshold picked on validation
  (out-of-sample predictions), applied to test.
- RouterBench slice (its own test split): routed cost as a share of GPT-4's cost at 98% and
  at 100% of GPT-4's accuracy.
- Latency: MiniLM on a 500-token prompt (p50), and one routing decision with the prompt's
  embedding cached (p50 / p99), per estimator.

Usage:
    .venv/bin/python bench/learned_router.py [--data-dir ../shared/data] [--seeds 5]
        [--estimators knn,logreg,gbm,mf] [--datasets routellm-gsm8k,routellm-mmlu,routerbench]
        [--cache-dir DIR] [--no-latency]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from tierwise.catalog import load_catalog
from tierwise.config import user_cache_dir
from tierwise.evaluation import metrics
from tierwise.evaluation.loaders import load_matrix
from tierwise.evaluation.matrix import FloatArray, OutcomeMatrix
from tierwise.evaluation.scorers import build_scorer
from tierwise.messages import Request
from tierwise.routing.base import RouteContext
from tierwise.routing.decide import choices, sweep
from tierwise.routing.embeddings import MiniLMEmbedder
from tierwise.routing.learned import LearnedRouter, Rule, make_predictor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RULES = ("target", "lambda")


def _fmt(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "  not reached"
    sd = statistics.stdev(known) if len(known) > 1 else 0.0
    missed = f" ({len(values) - len(known)} unreached)" if len(known) < len(values) else ""
    return f"{statistics.mean(known) * 100:5.1f}% ± {sd * 100:4.1f}{missed}"


class Split:
    """One seed's split and what every curve on it is measured against."""

    def __init__(self, matrix: OutcomeMatrix, seed: int) -> None:
        self.train, self.val, self.test = matrix.splits(seed)
        self.strong = self.train.strongest()
        self.cost_hat = self.train.cost.mean(axis=0)
        self.order = metrics.cost_order(self.train.cost)
        self.q_strong = float(self.test.quality[:, self.strong].mean())
        self.c_strong = float(self.test.cost[:, self.strong].mean())

    def cheapest_reaching(self, pred: FloatArray, rule: str, level: float) -> float | None:
        """Lowest mean test cost of the rule's thresholds reaching ``level`` x the strongest's
        quality (target rule: the eval harness's own sweep)."""
        floor = level * self.q_strong
        test = self.test
        if rule == "target":
            curve = metrics.sweep(pred, test.quality, test.cost, self.order)
            found = metrics.savings_at(curve, floor, self.c_strong * len(test), self.strong)
            return None if found is None else found.cost_usd / len(test)
        points = sweep("lambda", pred, quality=test.quality, cost=test.cost,
                       cost_hat=self.cost_hat, strongest=self.strong)  # fmt: skip
        ok = [p.cost for p in points if p.quality >= floor - 1e-12]
        return min(ok) if ok else None

    def deployable(self, pred_val: FloatArray, pred: FloatArray, rule: str, level: float):
        """(relative quality, savings) on test of the threshold picked on validation."""
        val = self.val
        floor = level * val.quality[:, self.strong].mean()
        points = sweep(rule, pred_val, quality=val.quality, cost=val.cost,  # type: ignore[arg-type]
                       cost_hat=self.cost_hat, strongest=self.strong)  # fmt: skip
        ok = [p for p in points if p.quality >= floor - 1e-12]
        if not ok:
            return None
        picked = min(ok, key=lambda p: p.cost)
        chosen = choices(picked.rule, pred, self.cost_hat, picked.threshold)
        rows = np.arange(len(self.test))
        quality = self.test.quality[rows, chosen].mean() / self.q_strong
        return float(quality), float(1 - self.test.cost[rows, chosen].mean() / self.c_strong)


def _predict(spec: str, split: Split, cache_dir: Path) -> tuple[FloatArray, FloatArray | None]:
    """Test predictions, and out-of-sample validation predictions for learned estimators."""
    if spec == "tfidf":
        scorer = build_scorer("tfidf")
        scorer.fit(split.train, split.val)
        return scorer.predict(split.test), None
    predictor = make_predictor(
        split.train.models, estimator=spec, embedder="minilm", cache_dir=cache_dir
    )
    held_out = predictor.fit(split.train, split.val)
    return predictor.predict(split.test.prompts), held_out


def _run(matrix: OutcomeMatrix, specs: list[str], seeds: int, cache_dir: Path, levels):
    costs: dict[tuple[str, str, float], list[float | None]] = {}
    deploy: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for seed in range(seeds):
        split = Split(matrix, seed)
        for spec in specs:
            started = time.perf_counter()
            pred, pred_val = _predict(spec, split, cache_dir)
            for rule in RULES:
                for level in levels:
                    cost = split.cheapest_reaching(pred, rule, level)
                    costs.setdefault((spec, rule, level), []).append(
                        None if cost is None else cost / split.c_strong
                    )
                found = (
                    None if pred_val is None else split.deployable(pred_val, pred, rule, levels[0])
                )
                if found is not None:
                    deploy.setdefault((spec, rule), []).append(found)
            seconds = time.perf_counter() - started
            print(f"  seed {seed} {spec:<7} fit+predict {seconds:5.1f}s", flush=True)
    return costs, deploy


def savings_table(matrix: OutcomeMatrix, specs: list[str], seeds: int, cache_dir: Path) -> None:
    costs, deploy = _run(matrix, specs, seeds, cache_dir, (0.95,))
    strongest = matrix.models[matrix.strongest()]
    print(f"\n{matrix.name}: {len(matrix)} prompts, {seeds} seeds, test ~{len(matrix) // 5}; "
          f"$ saved vs all on {strongest} at 95% of its test quality (test curve)")  # fmt: skip
    for spec in specs:
        cells = []
        for rule in RULES:
            saved = [None if c is None else 1 - c for c in costs[(spec, rule, 0.95)]]
            cells.append(f"{rule} rule {_fmt(saved)}")
        print(f"  {spec:<7} " + "   ".join(cells))
    print("  deployable: threshold picked on validation for 95%, on test ->")
    for (spec, rule), pairs in deploy.items():
        quality, saved = _fmt([p[0] for p in pairs]), _fmt([p[1] for p in pairs])
        print(f"  {spec:<7} {rule:<6} quality {quality} of the strongest's, saved {saved}")


def cost_table(matrix: OutcomeMatrix, specs: list[str], seeds: int, cache_dir: Path) -> None:
    levels = (0.98, 1.0)
    costs, _ = _run(matrix, specs, seeds, cache_dir, levels)
    strongest = matrix.models[matrix.strongest()]
    print(f"\n{matrix.name}: its test split ({sum(s == 'test' for s in matrix.given_split or [])} "
          f"prompts), {seeds} train/validation seeds; routed $ as a share of all on "
          f"{strongest}")  # fmt: skip
    for spec in specs:
        for rule in RULES:
            cells = [
                f"at {lv:.0%} of its accuracy {_fmt(costs[(spec, rule, lv)])}" for lv in levels
            ]
            print(f"  {spec:<7} {rule:<6} " + "   ".join(cells))


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


def _prompt_of(tokens: int, matrix: OutcomeMatrix, embedder: MiniLMEmbedder) -> tuple[str, int]:
    def count(text: str) -> int:
        return len(embedder.model.tokenizer(text, verbose=False)["input_ids"])

    text = ""
    for prompt in matrix.prompts:
        text += prompt + "\n"
        if count(text) >= tokens:
            break
    return text, count(text)


def latency(matrix: OutcomeMatrix, cache_dir: Path, estimators: list[str]) -> None:
    embedder = MiniLMEmbedder()
    text, tokens = _prompt_of(500, matrix, embedder)
    timings = []
    for i in range(65):
        start = time.perf_counter()
        embedder.embed([text])
        if i >= 5:
            timings.append((time.perf_counter() - start) * 1000)
    window = embedder.model.max_seq_length
    print(
        f"\nMiniLM ({embedder.dtype}, CPU, a {tokens}-token prompt read as a {window}-token "
        f"head+tail window): p50 {_p(timings, 50):.1f} ms, p99 {_p(timings, 99):.1f} ms"
    )
    catalog = load_catalog()
    split = Split(matrix, 0)
    candidates = [catalog.get(m) for m in matrix.models if m in catalog]
    request, context = Request.from_prompt(text, max_tokens=512), RouteContext(catalog=catalog)
    for estimator in estimators:
        predictor = make_predictor(
            matrix.models, estimator=estimator, embedder="minilm", cache_dir=cache_dir
        )
        predictor.fit(split.train, split.val)
        router = LearnedRouter(predictor, Rule(kind="target", threshold=0.7), estimator)
        router.select(request, candidates, context)  # the one encode; cached from now on
        decisions = []
        for _ in range(2000):
            start = time.perf_counter()
            router.select(request, candidates, context)
            decisions.append((time.perf_counter() - start) * 1000)
        print(f"decision with a cached embedding, {estimator:<6} ({len(candidates)} candidates):"
              f" p50 {_p(decisions, 50):.3f} ms, p99 {_p(decisions, 99):.3f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--cache-dir", type=Path, default=user_cache_dir())
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--estimators", default="knn,logreg,gbm,mf")
    parser.add_argument("--datasets", default="routellm-gsm8k,routellm-mmlu,routerbench")
    parser.add_argument("--no-latency", action="store_true")
    args = parser.parse_args()
    estimators = args.estimators.split(",")
    specs = [*estimators, "tfidf"]
    matrices = {}
    for name in args.datasets.split(","):
        matrix = load_matrix(name, data_dir=args.data_dir, cache_dir=args.cache_dir)
        matrices[name] = matrix
        print(f"{name}: embedding {len(matrix)} prompts (cached after the first run)", flush=True)
        warm = make_predictor(matrix.models, embedder="minilm", cache_dir=args.cache_dir)
        warm.embedder.embed(matrix.prompts)
        table = cost_table if name == "routerbench" else savings_table
        table(matrix, specs, args.seeds, args.cache_dir)
    if not args.no_latency:
        first = matrices.get("routellm-gsm8k") or next(iter(matrices.values()))
        latency(first, args.cache_dir, estimators)


if __name__ == "__main__":
    main()
