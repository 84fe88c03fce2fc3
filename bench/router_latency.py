"""Routing decision latency per router on recorded prompts (RouteLLM GSM8K + MMLU).

Prints decisions per second and p50/p99 microseconds per ``select`` for every router in the
registry, side by side in one run on the same recorded prompts. Rows:

- ``rules``, ``random``, ``cheapest``, ``strongest``: every prompt, six candidates (tiers 1-4
  of the shipped catalog).
- ``classifier``: the same, with a classifier answer already in the route context (what the
  strategy hands it). The classifier model call, or its cache lookup, is the strategy's work
  and is not timed; without an answer the classifier router decides as ``rules`` does.
- ``learned/hashing``: the light path (no torch: hashed n-gram embedding + lexical features,
  logistic regression), calibrated as ``tierwise calibrate`` does (seed-0 train/validation
  split of the RouteLLM GSM8K outcome matrix, target 95% of GPT-4's quality), loaded through
  the registry, and timed on every prompt outside that split. The hashing embedder keeps no
  cache: each decision featurizes its prompt, as in a gateway. Its candidates are the
  matrix's two models (Mixtral 8x7B, GPT-4 Turbo): the only ones it has outcomes for.
- ``learned/minilm uncached``: the same with the MiniLM embedder on ``--minilm`` prompts spread
  over the unseen ones, each embedded on request (every run loads the router afresh with an
  empty embedding cache; the embedding, its cache lookup and write are in the time).
  ``learned/minilm cached``: those prompts again, their vectors in memory (a gateway that
  embedded the prompt ahead of ``select``). Skipped with a note without sentence-transformers.
- ``rules/short``: one short coding prompt, 5000 times; ``rules on ...``: where the rules
  router sent each dataset.

Each row runs ``--repeat`` times and the run with the lowest p50 is reported (the machine is
shared; the best run is the least disturbed one). The learned routers' training embeddings are
cached in ``--cache-dir`` (as bench/routing_targets.py); their decisions never read it. Usage:

    .venv/bin/python bench/router_latency.py [--data-dir ../shared/data] [--mmlu 14042]
        [--gsm8k N] [--minilm 500] [--repeat 3] [--routers rules,learned,...]
        [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import collections
import csv
import gc
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from routing_targets import CANDIDATES, DATA

from tierwise.catalog import ModelSpec, load_catalog
from tierwise.config import load_settings, user_cache_dir
from tierwise.evaluation.loaders import load_matrix
from tierwise.messages import Request
from tierwise.routing.base import RouteContext, Router
from tierwise.routing.calibrate import Objective, calibrate
from tierwise.routing.classifier import Classification, ClassifierAnswer
from tierwise.routing.embeddings import minilm_available
from tierwise.routing.registry import ROUTERS, RouterEnv, router_factory

SHORT = "Rename the function `get_usr` to `get_user` in utils/helpers.py and fix its callers."
PARAMS = {"random": {"p": "0.3", "seed": "1"}}
ANSWER = ClassifierAnswer(
    model=CANDIDATES[0],
    source="cache",
    classification=Classification(task_kind="standard", skills={"math": 3, "reasoning": 3}),
)
"""What a classifier might say about a GSM8K problem (the hint the strategy passes)."""
TARGET = Objective(kind="target-quality", value=0.95)


def _prompts(path: Path, limit: int | None = None) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row["prompt"] for row in csv.DictReader(handle)]
    return rows[:limit] if limit is not None else rows


def _datasets(data_dir: Path, gsm8k_limit: int | None, mmlu_limit: int) -> dict[str, list[str]]:
    gsm8k = _prompts(data_dir / "routellm_eval/gsm8k/gsm8k_responses.csv", gsm8k_limit)
    mmlu: list[str] = []
    for path in sorted((data_dir / "routellm_eval/mmlu/responses").glob("mmlu_*.csv")):
        mmlu += _prompts(path)
    return {"gsm8k": gsm8k, "mmlu": mmlu[:mmlu_limit]}


class Bench:
    """Times ``select`` calls, on the six candidates and a plain route context unless a row
    gives its own."""

    def __init__(self, env: RouterEnv, repeat: int) -> None:
        self.env = env
        self.repeat = repeat
        self.candidates = [env.catalog.get(model_id) for model_id in CANDIDATES]
        self.context = RouteContext(catalog=env.catalog)

    def time(
        self,
        router: Router,
        requests: Sequence[Request],
        candidates: Sequence[ModelSpec] | None = None,
        context: RouteContext | None = None,
    ) -> tuple[list[float], list[str]]:
        """Microseconds per decision, and the models chosen."""
        candidates = candidates or self.candidates
        context = context or self.context
        timings, chosen = [], []
        for request in requests:
            start = time.perf_counter()
            decision = router.select(request, candidates, context)
            timings.append((time.perf_counter() - start) * 1e6)
            chosen.append(decision.chosen)
        return timings, chosen

    def best(
        self,
        router: Router,
        requests: Sequence[Request],
        candidates: Sequence[ModelSpec] | None = None,
        context: RouteContext | None = None,
    ) -> list[float]:
        """The least disturbed of ``repeat`` runs (lowest p50), after a warm-up."""
        self.time(router, requests[:200], candidates, context)
        runs = [self.time(router, requests, candidates, context)[0] for _ in range(self.repeat)]
        return min(runs, key=statistics.median)


def _report(name: str, timings: list[float]) -> None:
    cuts = statistics.quantiles(timings, n=100)
    rate = len(timings) / (sum(timings) / 1e6)
    print(
        f"{name:<30} p50 {cuts[49]:8.1f} us  p99 {cuts[98]:8.1f} us  {rate:9,.0f} decisions/s",
        flush=True,
    )


def _tiers(env: RouterEnv, chosen: list[str]) -> str:
    counts = collections.Counter(env.catalog.get(model_id).profile.tier for model_id in chosen)
    return "  ".join(f"tier {t}: {n / len(chosen):.1%}" for t, n in sorted(counts.items()))


def _env(scratch: Path, artifacts: Path) -> RouterEnv:
    """A router environment whose caches (embeddings, classifications) start empty."""
    scratch.mkdir(parents=True, exist_ok=True)
    settings = load_settings(None, cache_dir=scratch)
    return RouterEnv(settings=settings, catalog=load_catalog(), artifacts_dir=artifacts)


class Learned:
    """Learned routers calibrated on the GSM8K outcome matrix, and the prompts they never saw."""

    def __init__(self, args: argparse.Namespace, artifacts: Path, every: list[Request]) -> None:
        matrix = load_matrix("routellm-gsm8k", data_dir=args.data_dir, cache_dir=args.cache_dir)
        if args.gsm8k is not None:
            matrix = matrix.subset(range(min(args.gsm8k, len(matrix))))
        self.matrix = matrix
        self.artifacts = artifacts
        self.cache_dir = args.cache_dir
        train, validation, _ = matrix.splits(0)
        seen = set(train.prompts) | set(validation.prompts)
        self.unseen = [r for r in every if r.prompt_text() not in seen]

    def calibrated(self, embedder: str) -> str:
        """Calibrate and save an artifact (as ``tierwise calibrate``); its name."""
        name = f"bench-{embedder}"
        calibrate(
            self.matrix,
            TARGET,
            name=name,
            artifacts_dir=self.artifacts,
            cache_dir=self.cache_dir,
            embedder=embedder,
            resamples=200,
        )
        return name

    def router(self, name: str, scratch: Path) -> tuple[Router, list[ModelSpec]]:
        """The artifact loaded through the registry, with an empty embedding cache; the
        candidates it knows."""
        env = _env(scratch, self.artifacts)
        router = router_factory("learned")({"artifact": name}, env)
        return router, [env.catalog.get(model) for model in self.matrix.models]


def _learned(args: argparse.Namespace, bench: Bench, learned: Learned, scratch: Path) -> None:
    unseen = learned.unseen
    router, known = learned.router(learned.calibrated("hashing"), scratch / "hashing")
    _report(f"learned/hashing ({len(unseen):,})", bench.best(router, unseen, candidates=known))
    if not minilm_available():
        print("learned/minilm                 skipped: sentence-transformers is not installed")
        return
    if args.minilm <= 0:
        print("learned/minilm                 skipped: --minilm 0")
        return
    name = learned.calibrated("minilm")
    step = max(len(unseen) // args.minilm, 2)
    subset, warm_up = unseen[::step][: args.minilm], unseen[1::step][:20]
    uncached, cached = [], []
    for run in range(args.repeat):  # a fresh router and empty cache each run
        router, known = learned.router(name, scratch / f"minilm-{run}")
        bench.time(router, warm_up, known)  # loads the network, warms torch on other prompts
        uncached.append(bench.time(router, subset, known)[0])
        cached.append(bench.time(router, subset, known)[0])
    _report(f"learned/minilm uncached ({len(subset)})", min(uncached, key=statistics.median))
    _report(f"learned/minilm cached ({len(subset)})", min(cached, key=statistics.median))


def _rules_rows(bench: Bench, requests: dict[str, list[Request]]) -> None:
    rules = router_factory("rules")({}, bench.env)
    _report("rules/short", bench.best(rules, [Request.from_prompt(SHORT)] * 5000))
    for name, batch in requests.items():
        print(f"rules on {name:<6} {_tiers(bench.env, bench.time(rules, batch)[1])}")


def _routers(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if unknown := sorted(set(names) - set(ROUTERS)):
        raise argparse.ArgumentTypeError(
            f"unknown router {unknown[0]!r} (known: {', '.join(ROUTERS)})"
        )
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--cache-dir", type=Path, default=user_cache_dir())
    parser.add_argument("--mmlu", type=int, default=14_042, help="MMLU prompts to use")
    parser.add_argument(
        "--gsm8k", type=int, default=None, help="GSM8K prompts (and training rows) to use"
    )
    parser.add_argument("--minilm", type=int, default=500, help="prompts for MiniLM (0: skip)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--routers", type=_routers, default=list(ROUTERS), help="comma-separated registry names"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    datasets = _datasets(args.data_dir, args.gsm8k, args.mmlu)
    requests = {name: [Request.from_prompt(p) for p in ps] for name, ps in datasets.items()}
    gc.freeze()  # the bench's own 15k requests are not the router's garbage to collect
    try:
        _run(args, requests)
    finally:
        gc.unfreeze()
    print(f"(whole run {time.perf_counter() - started:.0f} s)")


def _run(args: argparse.Namespace, requests: dict[str, list[Request]]) -> None:
    every = [r for rs in requests.values() for r in rs]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        bench = Bench(_env(scratch / "cache", scratch / "routers"), args.repeat)
        sizes = ", ".join(f"{name} {len(batch):,}" for name, batch in requests.items())
        print(f"{len(every):,} prompts ({sizes})")
        for name in args.routers:
            if name == "learned":
                _learned(args, bench, Learned(args, scratch / "routers", every), scratch)
                continue
            router = router_factory(name)(PARAMS.get(name, {}), bench.env)
            hints = {"classification": ANSWER} if name == "classifier" else {}
            context = RouteContext(catalog=bench.env.catalog, hints=hints)
            _report(name, bench.best(router, every, context=context))
        if "rules" in args.routers:
            _rules_rows(bench, requests)


if __name__ == "__main__":
    main()
