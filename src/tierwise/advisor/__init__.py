"""The advisor rung: an executor consults a stronger model mid-task.

:mod:`~tierwise.advisor.runner` decides per call between Anthropic's own
``advisor_20260301`` tool (:mod:`~tierwise.advisor.native`, passed through) and an emulation
for any executor (:mod:`~tierwise.advisor.emulate`); :mod:`~tierwise.advisor.tool` holds the
wire shapes and transcript rewrites, :mod:`~tierwise.advisor.prompt` the escalation prompt,
:mod:`~tierwise.advisor.telemetry` the consult records. Nothing is imported here, so the
config can import :mod:`~tierwise.advisor.settings` without pulling in the engine.
"""
