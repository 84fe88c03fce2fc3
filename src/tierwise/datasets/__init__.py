"""Recorded outcomes of real models on public benchmarks, fetched once and cached."""

from tierwise.datasets.fetch import dataset_file
from tierwise.datasets.registry import DATASETS, DatasetSource, RecordedOutcome, get_dataset

__all__ = ["DATASETS", "DatasetSource", "RecordedOutcome", "dataset_file", "get_dataset"]
