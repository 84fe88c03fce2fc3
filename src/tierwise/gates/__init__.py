"""Quality gates: checks on an answer that decide whether a task escalates."""

from tierwise.gates.base import Gate, GateResult

__all__ = ["Gate", "GateResult"]
