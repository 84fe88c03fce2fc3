"""Outcome matrices from the real recorded datasets, a pinned download, and tierwise traces."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

import httpx2
import numpy as np
import pytest

from tests.fakes.loopback import serve
from tierwise.datasets import bundles
from tierwise.errors import DatasetError
from tierwise.evaluation import loaders
from tierwise.evaluation.loaders import load_matrix
from tierwise.ledger.export import export_traces
from tierwise.ledger.records import CallRecord, OutcomeRecord, TaskRecord
from tierwise.ledger.store import Ledger
from tierwise.tokens import estimate_tokens

WEAK = "together:mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "openai:gpt-4-1106-preview"
NOWHERE = Path("/nonexistent-cache")


def accuracy(matrix, model: str) -> float:
    return float(matrix.quality[:, matrix.model_index(model)].mean())


def test_gsm8k_published_accuracies_without_contaminated_prompts(shared_data: Path) -> None:
    matrix = load_matrix("routellm-gsm8k", data_dir=shared_data, cache_dir=NOWHERE)
    assert matrix.models == [WEAK, STRONG] and len(matrix) == 1319 - 12
    # RouteLLM's figures (0.638 / 0.857) are over all 1,319 prompts; 12 are contaminated
    assert accuracy(matrix, WEAK) == pytest.approx(0.638, abs=0.002)
    assert accuracy(matrix, STRONG) == pytest.approx(0.857, abs=0.002)
    contaminated = shared_data / "routellm_eval/gsm8k/contaminated_prompts.jsonl"
    banned = {json.loads(line)["eval_prompt"] for line in contaminated.open()}
    assert not banned & set(matrix.prompts)
    assert set(matrix.categories) == {"<=2 numbers", "3-4 numbers", "5+ numbers"}
    assert matrix.responses is not None and all(all(r) for r in matrix.responses)


def test_gsm8k_costs_are_tokens_at_catalog_prices(shared_data: Path) -> None:
    matrix = load_matrix("routellm-gsm8k", data_dir=shared_data, cache_dir=NOWHERE)
    assert matrix.responses is not None
    prompt_tokens = estimate_tokens(matrix.prompts[0])
    weak_out, strong_out = (estimate_tokens(r or "") for r in matrix.responses[0])
    # GPT-4 Turbo: $10 in / $30 out per million tokens; Mixtral on Together: $0.60 / $0.60
    assert matrix.cost[0, 1] == pytest.approx((prompt_tokens * 10 + strong_out * 30) / 1e6)
    assert matrix.cost[0, 0] == pytest.approx((prompt_tokens + weak_out) * 0.6 / 1e6)
    assert 0.002 < matrix.cost[:, 1].mean() < 0.006
    assert any("recorded response x catalog prices" in note for note in matrix.notes)


def test_gsm8k_csv_by_path_without_contamination_list(shared_data: Path, tmp_path: Path) -> None:
    link = tmp_path / "gsm8k_responses.csv"
    link.symlink_to(shared_data / "routellm_eval/gsm8k/gsm8k_responses.csv")
    matrix = load_matrix(str(link), data_dir=None, cache_dir=NOWHERE)
    assert len(matrix) == 1319
    assert round(accuracy(matrix, WEAK), 3) == 0.638
    assert round(accuracy(matrix, STRONG), 3) == 0.857


def test_mmlu_subjects_contamination_and_duplicates(shared_data: Path) -> None:
    matrix = load_matrix("routellm-mmlu", data_dir=shared_data, cache_dir=NOWHERE)
    assert len(matrix) == 14042 - 5 - 105
    assert len(set(matrix.prompts)) == len(matrix) and len(set(matrix.ids)) == len(matrix)
    assert len(set(matrix.categories)) == 57 and "high_school_physics" in matrix.categories
    assert accuracy(matrix, WEAK) == pytest.approx(0.681, abs=0.002)
    assert accuracy(matrix, STRONG) == pytest.approx(0.806, abs=0.002)
    assert matrix.responses is None
    assert any("1 output token" in note for note in matrix.notes)


def test_routerbench_dedup_merge_split_and_recorded_costs(shared_data: Path) -> None:
    matrix = load_matrix("routerbench", data_dir=shared_data, cache_dir=NOWHERE)
    assert len(matrix.models) == 11 and len(set(matrix.ids)) == len(matrix)
    assert len(matrix) == 3164 - 2  # unique sample_ids, less two repeated prompts
    assert round(accuracy(matrix, STRONG), 3) == 0.880
    assert not np.isnan(matrix.quality).any() and np.all(matrix.cost > 0)
    gpt4_cost = matrix.cost[:, matrix.model_index(STRONG)].mean()
    assert gpt4_cost == pytest.approx(0.005036, rel=0.01)  # README's mean $/call
    assert set(matrix.categories) == {"arc-challenge", "mbpp", "winogrande"}
    assert matrix.given_split is not None and set(matrix.given_split) == {"train", "test"}
    # this sample_id is in the test and the train file, each copy scoring different models
    row = matrix.ids.index("arc-challenge.val.136")
    assert matrix.given_split[row] == "test"
    assert matrix.quality[row, matrix.model_index("gpt-3.5-turbo-1106")] == 1.0
    assert "mistralai/mistral-7b-chat" in matrix.models  # not in the catalog: kept as named


def test_routerdc_scores_become_correctness_or_pass_fractions(shared_data: Path) -> None:
    matrix = load_matrix("routerdc", data_dir=shared_data, cache_dir=NOWHERE)
    assert len(matrix.models) == 7 and len(matrix) > 13_000
    cats = np.array(matrix.categories)
    mc = np.isin(cats, ["mmlu", "arc_challenge", "arc_easy"])
    assert set(np.unique(matrix.quality[mc])) == {0.0, 1.0}
    gsm8k = matrix.quality[cats == "gsm8k"]
    assert ((gsm8k > 0) & (gsm8k < 1)).any()  # pass fraction of 10 samples kept
    assert np.all(matrix.cost == matrix.cost[:, :1])  # one nominal price for all
    assert matrix.given_split is not None
    assert {matrix.given_split[i] for i in np.flatnonzero(cats == "mbpp")} == {"test"}


def test_every_pinned_file_matches_the_local_copy(shared_data: Path) -> None:
    for name in bundles.bundle_names():
        paths = bundles.get_bundle(name).paths(data_dir=shared_data, cache_dir=NOWHERE)
        assert all(path.is_file() for path in paths.values())


def test_named_dataset_downloads_once_pinned(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = bundles.get_bundle("routellm-gsm8k")
    served = {f.url.split("githubusercontent.com")[1]: f.local_path for f in real.files.values()}
    hits: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        hits.append(request.url.path)
        return httpx2.Response(200, content=(shared_data / served[request.url.path]).read_bytes())

    with serve(handler) as base:
        files = {
            role: f.model_copy(
                update={"url": f.url.replace("https://raw.githubusercontent.com", base)}
            )
            for role, f in real.files.items()
        }
        monkeypatch.setattr(
            loaders, "get_bundle", lambda _: real.model_copy(update={"files": files})
        )
        first = load_matrix("routellm-gsm8k", data_dir=None, cache_dir=tmp_path)
        second = load_matrix("routellm-gsm8k", data_dir=None, cache_dir=tmp_path)
    assert sorted(hits) == sorted(served)  # each file fetched once, then read from the cache
    assert len(first) == len(second) == 1307
    assert first.ids == second.ids and np.array_equal(first.quality, second.quality)


def test_download_with_a_wrong_checksum_is_refused(tmp_path: Path) -> None:
    pinned = bundles.DatasetFile(name="x--a.csv", url="", sha256="0" * 64, local_path="a.csv")

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=b"prompt,m\nq,True\n")

    with serve(handler) as base:
        bundle = bundles.DatasetBundle(
            name="x",
            description="",
            models={},
            files={"a": pinned.model_copy(update={"url": f"{base}/a.csv"})},
        )
        with pytest.raises(DatasetError, match="does not match"):
            bundle.paths(data_dir=None, cache_dir=tmp_path)


def _task(
    ledger: Ledger, prompt: str, model: str, correct: bool | None, cost: str | None, **task: object
) -> None:
    record = TaskRecord(prompt_text=prompt, source="demo", **task)
    call = CallRecord(
        task_id=record.id,
        provider=model.partition(":")[0],
        model=model,
        cost_usd=None if cost is None else Decimal(cost),
        response_text="42",
    )
    outcome = OutcomeRecord(
        task_id=record.id,
        outcome="success" if correct else "failure",
        correct=correct,
        source="dataset",
    )
    ledger.append(record, call, outcome)


def test_trace_file_becomes_a_matrix(tmp_path: Path) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    for i in range(3):
        _task(ledger, f"q{i}", WEAK, i != 1, "0.0001")
        _task(ledger, f"q{i}", STRONG, True, "0.002")
    _task(ledger, "q0", STRONG, False, "0.004")  # a repeat: averaged
    _task(ledger, "q3", WEAK, True, "0.0001")  # no strong label: left out
    _task(ledger, "q4", WEAK, True, None)  # unknown cost: left out
    _task(ledger, "q4", STRONG, True, "0.002")
    _task(ledger, "q5", WEAK, None, "0.0001")  # no correctness label: not a cell
    buffer = io.StringIO()
    export_traces(ledger, buffer)
    ledger.close()
    path = tmp_path / "traces.jsonl"
    path.write_text(buffer.getvalue())
    matrix = load_matrix(str(path), data_dir=None, cache_dir=NOWHERE)
    assert sorted(matrix.prompts) == ["q0", "q1", "q2"]
    assert matrix.models == sorted([WEAK, STRONG])
    q0 = matrix.prompts.index("q0")
    strong = matrix.model_index(STRONG)
    assert matrix.quality[q0, strong] == 0.5 and matrix.cost[q0, strong] == pytest.approx(0.003)
    assert matrix.quality[matrix.prompts.index("q1"), matrix.model_index(WEAK)] == 0.0
    assert "1 prompts lacking a model and 1 of unknown cost" in matrix.notes[0]


def test_unreadable_inputs_are_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,model_a\nhello,maybe\n")
    with pytest.raises(DatasetError, match="not a correctness flag"):
        load_matrix(str(bad), data_dir=None, cache_dir=NOWHERE)
    lines = tmp_path / "t.jsonl"
    lines.write_text("{not json\n")
    with pytest.raises(DatasetError, match="line 1: not valid JSON"):
        load_matrix(str(lines), data_dir=None, cache_dir=NOWHERE)
    with pytest.raises(DatasetError, match="not a known name"):
        load_matrix("imagenet", data_dir=None, cache_dir=NOWHERE)
    with pytest.raises(DatasetError, match="not found at"):
        load_matrix("routerbench", data_dir=tmp_path, cache_dir=NOWHERE)
