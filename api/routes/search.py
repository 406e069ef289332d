"""``GET|POST /search``, ``GET /stats``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import ServicesDep, build_filters
from api.schemas import COMMON, SearchRequest, SearchResponse, StatsResponse, problems
from rag.search import MAX_K, MAX_OFFSET, MAX_QUERY_CHARS

router = APIRouter(tags=["search"], responses=COMMON)
ERRORS = problems(400, 503)


def _search(services: ServicesDep, body: SearchRequest) -> dict[str, Any]:
    filters = build_filters(services, body.channel, body.tag, body.since, body.until)
    # mode unset: TGRAG_SEARCH_MODE
    return services.search(body.q, filters, k=body.k, mode=body.mode or None,
                           offset=body.offset).to_dict()


@router.get("/search", response_model=SearchResponse, responses=ERRORS)
def search(
    services: ServicesDep,
    q: Annotated[str, Query(description=f"What to look for (1..{MAX_QUERY_CHARS} characters).",
                            json_schema_extra={"minLength": 1, "maxLength": MAX_QUERY_CHARS,
                                               "pattern": r"\S"},
                            examples=["повышение ключевой ставки"])] = "",
    k: Annotated[int, Query(description=f"Posts to return, 1..{MAX_K}.",
                            json_schema_extra={"minimum": 1, "maximum": MAX_K})] = 10,
    offset: Annotated[int, Query(description=f"Hits to skip, 0..{MAX_OFFSET}: the previous "
                                 "page's next_offset.",
                                 json_schema_extra={"minimum": 0, "maximum": MAX_OFFSET},
                                 examples=[10])] = 0,
    channel: Annotated[list[str], Query(description="Channel id, username or title.")] = [],  # noqa: B006
    tag: Annotated[list[str], Query(description="Tags, any of.")] = [],  # noqa: B006
    since: Annotated[str | None, Query(description="YYYY-MM-DD[THH:MM] or unix.",
                                       examples=["2024-05-01"])] = None,
    until: Annotated[str | None, Query(description="Inclusive end date.")] = None,
    mode: Annotated[str | None, Query(description="dense | sparse | hybrid; default "
                                      "TGRAG_SEARCH_MODE.")] = None,
) -> dict[str, Any]:
    """Posts matching the query, best first: one hit per post (its best chunk as snippet, the
    query's words in highlights), near-duplicates collapsed into copies, paged by offset."""
    body = SearchRequest.model_construct(q=q, k=k, offset=offset, channel=channel, tag=tag,
                                         since=since, until=until, mode=mode)
    return _search(services, body)


@router.post("/search", response_model=SearchResponse, responses=ERRORS)
def search_post(body: SearchRequest, services: ServicesDep) -> dict[str, Any]:
    """``GET /search`` with a JSON body (long queries, many filters)."""
    return _search(services, body)


@router.get("/stats", response_model=StatsResponse, responses=problems(503))
def stats(services: ServicesDep) -> dict[str, Any]:
    """Your tenant's posts, vectors and channels."""
    return services.stats()
