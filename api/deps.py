"""Dependencies shared by the routers: the caller's view of the index, the search filters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.security import Principal, authenticate
from rag.index import Index
from rag.search import SearchFilters, parse_date


def get_index(request: Request,
              principal: Annotated[Principal, Depends(authenticate)]) -> Index:
    """The process's index (opened by the lifespan), as the caller's tenant sees it.

    Depending on it authenticates the request, so no route can reach the index unauthenticated,
    and every search or tag count made through it is filtered to the caller's tenant.
    """
    return request.app.state.index.for_tenant(principal.tenant)


IndexDep = Annotated[Index, Depends(get_index)]


def build_filters(index: Index, channel: list[str], tag: list[str], since: str | None,
                  until: str | None) -> SearchFilters:
    return SearchFilters(
        channel_ids=[index.catalog.resolve(c) for c in channel],
        tags=list(tag),
        since=parse_date(since) if since else None,
        until=parse_date(until, end_of_day=True) if until else None,
        tenant=index.tenant,
    )
