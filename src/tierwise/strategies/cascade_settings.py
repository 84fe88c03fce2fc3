"""``[cascade]``: the defaults of ``cascade`` policies (each may be overridden in the policy).

Example::

    [cascade]
    tiers = ["openai:gpt-5-mini", "anthropic:claude-sonnet-4-6", "anthropic:claude-opus-4-7"]
    gates = ["python", "command:python -m pytest -q"]
    workspace = "tests/fixtures/add"     # copied into each command gate's scratch workspace
    max_escalations = 2
    retries = 1                          # same-tier retries, taken only when cheaper in expectation
    retry_pass_rate = 0.3                # chance a retry passes after a failure
    retry_pass_rates = { "openai:gpt-5-mini" = 0.4 }
    feedback = true                      # show the next try the failed answer and why
    on_gate_error = "escalate"           # a gate's own model call failed: escalate|accept|fail
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CascadeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tiers: list[str] = Field(default_factory=list)
    """Catalog ids, cheapest first; empty: ``routing.candidates`` (else every model with a
    key), the cheapest model of each profile tier."""
    gates: list[str] = Field(default_factory=lambda: ["confidence>=0.7"])
    """Gate specs, run in order (see :mod:`tierwise.gates.registry`)."""
    max_escalations: int = Field(default=2, ge=0)
    retries: int = Field(default=1, ge=0)
    """Most retries at one tier; each is taken only when its expected cost is lower."""
    retry_pass_rate: float = Field(default=0.3, ge=0, le=1)
    retry_pass_rates: dict[str, float] = Field(default_factory=dict)
    """Per model id: the chance its retry passes the gates (overrides ``retry_pass_rate``)."""
    feedback: bool = False
    """Show each retry or climb the failed answer and the gate's reason."""
    on_gate_error: Literal["escalate", "accept", "fail"] = "escalate"
    """When a gate's own model call fails: ``escalate`` (count it a failed check), ``accept``
    (keep the answer, recorded unverified) or ``fail`` (the task fails). Plan steps too."""
    workspace: Path | None = None
    answer_file: str = "solution.py"
    gate_timeout_s: float = Field(default=60.0, gt=0)
