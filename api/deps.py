"""Dependencies of the routers, injected once here: the caller, and the caller's services.

``ServicesDep`` is the process's :class:`~api.services.Services` as the caller's tenant sees it;
depending on it authenticates the request (no route reaches the index unauthenticated) and
scopes every read and write to the caller's tenant.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.security import Principal, authenticate, require_operator
from api.services import Services
from rag.search import SearchFilters

PrincipalDep = Annotated[Principal, Depends(authenticate)]


def get_services(request: Request, principal: PrincipalDep) -> Services:
    """The services (built by the lifespan), as the caller's tenant sees them."""
    services: Services = request.app.state.services
    return services.for_tenant(principal.tenant)


ServicesDep = Annotated[Services, Depends(get_services)]
OperatorDep = Annotated[Principal, Depends(require_operator)]


def build_filters(services: Services, channel: list[str], tag: list[str], since: str | None,
                  until: str | None) -> SearchFilters:
    """Search filters from query/body parameters (channels resolved in the tenant's catalog)."""
    return services.filters(channel, tag, since, until)
