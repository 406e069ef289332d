"""HTTP routes for question answering and tags: ``POST /ask``, ``POST /ask/stream``, ``GET /tags``.

``/ask/stream`` is Server-Sent Events: ``event: token`` (``{"text"}``) as the answer is written,
then ``event: sources`` (the list of sources), then ``event: done`` (the whole ask JSON).  The
first event is computed before the response starts, so a bad request or an LLM failure up front
is an ordinary problem+json error; a failure mid-stream becomes ``event: error``.

The LLM is built once per app (``app.state.qa_llm``) so its OAuth token and concurrency limit are
shared by all requests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api.app import get_index
from api.deps import build_filters
from api.schemas import AskResponse, TagsResponse
from rag.errors import TgragError
from rag.index import Index
from rag.llm import build_llm
from rag.qa import QAEngine, QAEvent
from rag.tag_stats import top_tags

router = APIRouter()
IndexDep = Annotated[Index, Depends(get_index)]


class AskRequest(BaseModel):
    question: str = Field(..., description="The question, in any words.")
    k: int | None = Field(None, ge=1, le=20, description="Posts to use as sources.")
    channel: list[str] = Field(default_factory=list, description="Channel id, username or title.")
    tag: list[str] = Field(default_factory=list, description="Tags, any of.")
    since: str | None = Field(None, description="YYYY-MM-DD[THH:MM] or unix.")
    until: str | None = Field(None, description="Inclusive end date.")


def _engine(request: Request, index: Index) -> QAEngine:
    state = request.app.state
    if not hasattr(state, "qa_llm"):
        state.qa_llm = build_llm(index.settings)
    return QAEngine(index, state.qa_llm)


@router.post("/ask", response_model=AskResponse)
def ask(body: AskRequest, request: Request, index: IndexDep) -> dict[str, Any]:
    filters = build_filters(index, body.channel, body.tag, body.since, body.until)
    return _engine(request, index).ask(body.question, filters, k=body.k).to_dict()


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
def ask_stream(body: AskRequest, request: Request, index: IndexDep) -> StreamingResponse:
    filters = build_filters(index, body.channel, body.tag, body.since, body.until)
    events = _engine(request, index).stream(body.question, filters, k=body.k)
    first = next(events)  # errors before the first token are plain HTTP errors

    def body_iter() -> Iterator[str]:
        yield _sse(first)
        try:
            for event in events:
                yield _sse(event)
        except TgragError as err:
            problem = {"title": err.title, "detail": err.message, "hint": err.hint,
                       "status": err.http_status}
            yield f"event: error\ndata: {json.dumps(problem, ensure_ascii=False)}\n\n"

    return StreamingResponse(body_iter(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/tags", response_model=TagsResponse)
def tags(
    index: IndexDep,
    channel: Annotated[list[str], Query(description="Channel id, username or title.")] = [],  # noqa: B006
    since: Annotated[str | None, Query(description="YYYY-MM-DD[THH:MM] or unix.")] = None,
    until: Annotated[str | None, Query(description="Inclusive end date.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Tags to return.")] = 50,
) -> dict[str, Any]:
    """Top tags with the number of posts carrying each."""
    return top_tags(index, build_filters(index, channel, [], since, until), limit=limit)
