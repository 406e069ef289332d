"""``GET /posts/{channel}/{message_id}`` and ``GET /posts/{channel}/{message_id}/similar``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from api.deps import ServicesDep
from api.schemas import COMMON, PostOut, SimilarResponse, problems
from rag.search import MAX_K

router = APIRouter(prefix="/posts", tags=["posts"], responses=COMMON)
ChannelPath = Annotated[str, Path(description="Channel id or username.",
                                  examples=["econ_daily"])]
MessagePath = Annotated[int, Path(description="Message id in the channel.",
                                  json_schema_extra={"minimum": 1}, examples=[1])]


@router.get("/{channel}/{message_id}", response_model=PostOut, responses=problems(400, 404))
def post(channel: ChannelPath, message_id: MessagePath, services: ServicesDep) -> dict[str, Any]:
    """The whole post: text, metadata, tags and link."""
    return services.post(channel, message_id).to_dict()


@router.get("/{channel}/{message_id}/similar", response_model=SimilarResponse,
            responses=problems(400, 404))
def similar(
    channel: ChannelPath,
    message_id: MessagePath,
    services: ServicesDep,
    k: Annotated[int, Query(description=f"Posts to return, 1..{MAX_K}.",
                            json_schema_extra={"minimum": 1, "maximum": MAX_K})] = 10,
) -> dict[str, Any]:
    """More like this: posts nearest to this one's stored vectors, itself excluded; its own
    copies (forwards, cross-posts) are listed in copies, not as similar posts."""
    return services.similar(channel, message_id, k=k).to_dict()
