"""Datasets: local copy verified, pinned download cached once, bad checksums refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx2
import pytest

from tests.fakes.loopback import serve
from tierwise.datasets import dataset_file, get_dataset
from tierwise.datasets.registry import ROUTELLM_GSM8K
from tierwise.errors import DatasetError

CSV = (
    "prompt,mistralai/Mixtral-8x7B-Instruct-v0.1,gpt-4-1106-preview,"
    "mistralai/Mixtral-8x7B-Instruct-v0.1_response,gpt-4-1106-preview_response\n"
    '"What is 2+2?",False,True,"5","2+2 = 4. The answer is 4."\n'
)


def _source_for(body: bytes, url: str):
    return ROUTELLM_GSM8K.model_copy(
        update={"url": url, "sha256": hashlib.sha256(body).hexdigest()}
    )


def test_local_copy_from_shared_data(shared_data: Path) -> None:
    source = get_dataset("routellm-gsm8k")
    path = dataset_file(source, data_dir=shared_data, cache_dir=Path("/nonexistent"))
    outcomes = source.load(path)
    assert len(outcomes) == 2 * 1319
    strong = [o for o in outcomes if o.model == "openai:gpt-4-1106-preview"]
    accuracy = sum(bool(o.correct) for o in strong) / len(strong)
    assert round(accuracy, 3) == 0.857  # RouteLLM's published figure for GPT-4 on GSM8K


def test_download_once_then_cached(tmp_path: Path) -> None:
    body = CSV.encode()
    hits: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        hits.append(request.url.path)
        return httpx2.Response(200, content=body, headers={"content-type": "text/csv"})

    with serve(handler) as base:
        source = _source_for(body, f"{base}/lm-sys/RouteLLM/pinned/gsm8k_responses.csv")
        seen: list[int] = []
        first = dataset_file(
            source, data_dir=None, cache_dir=tmp_path, progress=lambda d, t: seen.append(d)
        )
        second = dataset_file(source, data_dir=None, cache_dir=tmp_path)
    assert first == second and first.read_bytes() == body
    assert len(hits) == 1 and seen[-1] == len(body)
    rows = source.load(first)
    assert {(o.model, o.correct) for o in rows} == {
        ("openai:gpt-4-1106-preview", True),
        ("together:mistralai/Mixtral-8x7B-Instruct-v0.1", False),
    }


def test_checksum_mismatch_is_refused_and_not_cached(tmp_path: Path) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=b"tampered")

    with serve(handler) as base:
        source = _source_for(CSV.encode(), f"{base}/data.csv")
        with pytest.raises(DatasetError, match="does not match"):
            dataset_file(source, data_dir=None, cache_dir=tmp_path)
    assert not list((tmp_path / "datasets").glob("*"))


def test_download_failure_is_one_clear_error(tmp_path: Path) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(404, content=b"not found")

    with serve(handler) as base:
        source = _source_for(CSV.encode(), f"{base}/data.csv")
        with pytest.raises(DatasetError, match="could not download"):
            dataset_file(source, data_dir=None, cache_dir=tmp_path)


def test_missing_local_copy(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found at"):
        dataset_file(ROUTELLM_GSM8K, data_dir=tmp_path, cache_dir=tmp_path)


def test_unknown_dataset() -> None:
    with pytest.raises(DatasetError, match="known: routellm-gsm8k"):
        get_dataset("imagenet")
