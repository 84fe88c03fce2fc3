"""Quality gates: checks on an answer that decide whether a task escalates."""

from tierwise.gates.base import Gate, GateResult, check_recorded
from tierwise.gates.registry import GATES, GateEnv, build_gate, build_gates

__all__ = ["GATES", "Gate", "GateEnv", "GateResult", "build_gate", "build_gates", "check_recorded"]
