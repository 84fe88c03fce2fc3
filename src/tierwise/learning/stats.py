"""Rates with 95% Wilson intervals, and the minimum-sample rule every verdict obeys."""

from __future__ import annotations

from pydantic import BaseModel

CONFIDENCE = 0.95


class Rate(BaseModel):
    """``hits`` out of ``n``, with its 95% Wilson score interval."""

    hits: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.hits / self.n if self.n else 0.0

    def enough(self, min_samples: int) -> bool:
        return self.n >= min_samples

    def __str__(self) -> str:
        """``6/8 75% [41-93%]``: the count, the rate and its 95% interval."""
        if not self.n:
            return "0/0"
        return f"{self.hits}/{self.n} {self.value:.0%} [{self.low:.0%}-{self.high:.0%}]"


def rate(hits: int, n: int) -> Rate:
    """``hits`` of ``n`` with a Wilson interval (``n`` 0: the whole of [0, 1])."""
    if n == 0:
        return Rate(hits=0, n=0, low=0.0, high=1.0)
    from scipy.stats import binomtest  # type: ignore[import-untyped]  # noqa: PLC0415

    interval = binomtest(hits, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return Rate(hits=hits, n=n, low=float(interval.low), high=float(interval.high))
