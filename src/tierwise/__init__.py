"""tierwise: spend the expensive model only where it pays.

>>> from tierwise import SyncEngine
>>> with SyncEngine() as engine:                                    # doctest: +SKIP
...     result = engine.complete("Summarise this file…", policy="fixed:anthropic:claude-haiku-4-5")
...     print(result.response.text(), result.cost_usd)

The top-level names load on first use, so ``import tierwise.catalog`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tierwise.engine import Engine, Result, SyncEngine
    from tierwise.errors import TierwiseError
    from tierwise.messages import Message, Request, Response, TextBlock

_EXPORTS = {
    "Engine": "tierwise.engine",
    "Result": "tierwise.engine",
    "SyncEngine": "tierwise.engine",
    "TierwiseError": "tierwise.errors",
    "Message": "tierwise.messages",
    "Request": "tierwise.messages",
    "Response": "tierwise.messages",
    "TextBlock": "tierwise.messages",
}

__all__ = [
    "Engine",
    "Message",
    "Request",
    "Response",
    "Result",
    "SyncEngine",
    "TextBlock",
    "TierwiseError",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tierwise' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
