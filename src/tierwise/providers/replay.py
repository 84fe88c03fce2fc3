"""The replay provider: answers from recorded real outcomes, never the network.

Each prompt a model was recorded answering is served back as that model's response. Token
counts come from the recording when it has them, else are estimated from the text (and the
usage is marked ``estimated``). The recorded correctness rides along on the response as
``recorded_correct`` so evaluation can score it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from tierwise.catalog import ModelSpec
from tierwise.datasets import RecordedOutcome
from tierwise.errors import NotFoundError
from tierwise.messages import Request, Response, StreamEvent, TextBlock, Usage
from tierwise.streaming import events_from_response
from tierwise.tokens import estimate_tokens


def _key(text: str) -> str:
    return " ".join(text.split())


class ReplayProvider:
    """Serves :class:`RecordedOutcome` rows keyed by (catalog model id, prompt text)."""

    def __init__(self, name: str, outcomes: Iterable[RecordedOutcome]) -> None:
        self.name = name
        self._answers = {(o.model, _key(o.prompt)): o for o in outcomes}

    @property
    def models(self) -> set[str]:
        return {model for model, _ in self._answers}

    def _find(self, request: Request, model: ModelSpec) -> RecordedOutcome:
        found = self._answers.get((model.id, _key(request.prompt_text())))
        if found is None:
            raise NotFoundError(
                "no recorded answer of this model for this prompt",
                provider=self.name,
                model=model.name,
                status=404,
            )
        return found

    @staticmethod
    def _usage(request: Request, outcome: RecordedOutcome) -> Usage:
        prompt_text = "".join(b.text for b in request.system) + "".join(
            m.text() for m in request.messages
        )
        recorded = outcome.input_tokens is not None and outcome.output_tokens is not None
        return Usage(
            input_tokens=outcome.input_tokens or estimate_tokens(prompt_text),
            output_tokens=outcome.output_tokens or estimate_tokens(outcome.response_text or ""),
            estimated=not recorded,
        )

    async def complete(self, request: Request, model: ModelSpec) -> Response:
        outcome = self._find(request, model)
        return Response(
            id=f"replay-{outcome.row_id}",
            model=model.id,
            content=[TextBlock(text=outcome.response_text or "")],
            stop_reason="end_turn",
            usage=self._usage(request, outcome),
            recorded_correct=outcome.correct,
            recorded_cost_usd=None if outcome.cost_usd is None else str(outcome.cost_usd),
        )

    async def stream(self, request: Request, model: ModelSpec) -> AsyncIterator[StreamEvent]:
        response = await self.complete(request, model)
        for event in events_from_response(response):
            yield event

    async def aclose(self) -> None:
        return None
