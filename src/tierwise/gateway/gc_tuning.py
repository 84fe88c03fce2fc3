"""The garbage collector, tuned for a long-running server process.

Once the gateway is started — catalog, routers, SDKs and the ledger loaded — nearly every
object in the heap lives as long as the process. CPython's oldest generation would still
walk all of them on each full collection: 100-200 ms pauses on this heap (measured with
``bench/gateway_layers.py``), every request in flight waiting on them. :func:`tune_gc`
collects once and moves what is left into the permanent generation (``gc.freeze``), so later
passes look only at objects made since, and raises the youngest generation's threshold so
that a burst of short-lived request objects triggers fewer passes.
"""

from __future__ import annotations

import gc
from collections.abc import Callable


def tune_gc(gen0_threshold: int) -> Callable[[], None]:
    """Freeze the heap as it is now; ``gen0_threshold`` > 0 also sets the youngest
    generation's threshold. Returns what undoes both (the gateway's shutdown calls it)."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    if gen0_threshold > 0:
        gc.set_threshold(gen0_threshold, *before[1:])

    def undo() -> None:
        gc.unfreeze()
        gc.set_threshold(*before)

    return undo
