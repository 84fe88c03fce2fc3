"""Quality gates: checks on an answer that decide whether a task escalates."""

from tierwise.gates.base import (
    GATE_ERROR_POLICIES,
    Gate,
    GateErrorPolicy,
    GateResult,
    accepted,
    check_recorded,
    gate_error_policy,
)
from tierwise.gates.registry import GATES, GateEnv, build_gate, build_gates

__all__ = [
    "GATES",
    "GATE_ERROR_POLICIES",
    "Gate",
    "GateEnv",
    "GateErrorPolicy",
    "GateResult",
    "accepted",
    "build_gate",
    "build_gates",
    "check_recorded",
    "gate_error_policy",
]
