"""The ledger: an append-only record of every model call and decision, and what it cost.

SQLite by default (:func:`default_ledger_url`), PostgreSQL by URL; traces export as JSONL for
router calibration (:mod:`tierwise.ledger.export`), spend reports in
:mod:`tierwise.ledger.report`.
"""

from tierwise.ledger.records import (
    CallRecord,
    DecisionRecord,
    EscalationRecord,
    GateRecord,
    LedgerRecord,
    OutcomeRecord,
    TaskRecord,
)
from tierwise.ledger.store import Ledger, default_ledger_url

__all__ = [
    "CallRecord",
    "DecisionRecord",
    "EscalationRecord",
    "GateRecord",
    "Ledger",
    "LedgerRecord",
    "OutcomeRecord",
    "TaskRecord",
    "default_ledger_url",
]
