"""HTTP routes for question answering and tags: ``POST /ask``, ``POST /ask/stream``, ``GET /tags``.

``/ask/stream`` is Server-Sent Events: ``event: token`` (``{"text"}``) as the answer is written,
then ``event: sources`` (the list of sources), then ``event: done`` (the whole ask JSON).  The
first event is computed before the response starts, so a bad request or an LLM failure up front
is an ordinary problem+json error; a failure mid-stream becomes ``event: error``.

The LLM is the services' one (built once per process), so its OAuth token and concurrency limit
are shared by all requests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api.deps import ServicesDep, build_filters
from api.errors import problem_body
from api.schemas import COMMON, AskResponse, OneOrMany, TagsResponse, problems
from rag.errors import TgragError
from rag.qa import QAEvent

router = APIRouter(tags=["ask"], responses={**COMMON, **problems(400, 502, 503)})


class AskRequest(BaseModel):
    question: str = Field(..., description="The question, in any words.")
    k: int | None = Field(None, ge=1, le=20, description="Posts to use as sources.")
    channel: OneOrMany = Field(default_factory=list,
                               description="Channel ids, usernames or titles: a list, or one.")
    tag: OneOrMany = Field(default_factory=list, description="Tags, any of: a list, or one.")
    since: str | None = Field(None, description="YYYY-MM-DD[THH:MM] or unix.")
    until: str | None = Field(None, description="Inclusive end date.")


@router.post("/ask", response_model=AskResponse)
def ask(body: AskRequest, services: ServicesDep) -> dict[str, Any]:
    filters = build_filters(services, body.channel, body.tag, body.since, body.until)
    return services.ask(body.question, filters, k=body.k).to_dict()


def _sse(event: QAEvent) -> str:
    data = {"text": event.data} if event.type == "token" else event.data
    return f"event: {event.type}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.post("/ask/stream", response_class=StreamingResponse, responses={200: {
    "description": "Server-Sent Events: token*, sources, done (or error)",
    "content": {"text/event-stream": {"schema": {
        "type": "object", "required": ["event", "data"],
        "properties": {"event": {"enum": ["token", "sources", "done", "error"]},
                       "data": {"type": "string", "description": "JSON"}}}, "example":
                'event: token\ndata: {"text": "Банк России повысил ставку [1]"}\n\n'}}}})
def ask_stream(body: AskRequest, services: ServicesDep) -> StreamingResponse:
    filters = build_filters(services, body.channel, body.tag, body.since, body.until)
    events = services.stream(body.question, filters, k=body.k)
    first = next(events)  # errors before the first token are plain HTTP errors

    def body_iter() -> Iterator[str]:
        yield _sse(first)
        try:
            for event in events:
                yield _sse(event)
        except TgragError as err:
            problem = json.dumps(problem_body(err), ensure_ascii=False)
            yield f"event: error\ndata: {problem}\n\n"

    return StreamingResponse(body_iter(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/tags", response_model=TagsResponse)
def tags(
    services: ServicesDep,
    channel: Annotated[list[str], Query(description="Channel id, username or title.")] = [],  # noqa: B006
    since: Annotated[str | None, Query(description="YYYY-MM-DD[THH:MM] or unix.")] = None,
    until: Annotated[str | None, Query(description="Inclusive end date.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Tags to return.")] = 50,
) -> dict[str, Any]:
    """Top tags with the number of posts carrying each."""
    return services.tags(build_filters(services, channel, [], since, until), limit=limit)
