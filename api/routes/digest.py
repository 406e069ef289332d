"""``GET /digest``: the period's posts as ranked stories, each summed up with citations
(``rag.digest``), for the caller's tenant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import ServicesDep
from api.schemas import COMMON, DigestResponse, problems

router = APIRouter(tags=["digest"], responses={**COMMON, **problems(400, 502, 503)})


@router.get("/digest", response_model=DigestResponse)
def digest(
    services: ServicesDep,
    since: Annotated[str, Query(description="A duration back from until (90m, 12h, 1d, 2w) or "
                                "a date (YYYY-MM-DD[THH:MM], unix seconds).",
                                examples=["1d"])] = "1d",
    until: Annotated[str | None, Query(description="Inclusive end date; default now.")] = None,
    channel: Annotated[list[str], Query(description="Channel id, username or title.")] = [],  # noqa: B006
    tag: Annotated[list[str], Query(description="Tags, any of.")] = [],  # noqa: B006
    stories: Annotated[int | None, Query(description="Stories to return, 1..100; default "
                                         "TGRAG_DIGEST_STORIES.",
                                         json_schema_extra={"minimum": 1, "maximum": 100})] = None,
) -> dict[str, Any]:
    """Stories of the period, best first (size and engagement), each with a title and 1-2
    sentences citing its posts as [n]: written by the LLM when one is configured (GigaChat), else
    quoted from the posts.  Near-duplicate copies are grouped first, then topic clusters."""
    return services.digest(since, until, channel, tag, stories=stories).to_dict()
