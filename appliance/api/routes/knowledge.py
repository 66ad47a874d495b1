"""Knowledge search over the hybrid index."""

from __future__ import annotations

from litestar import Request, post
from litestar.datastructures import State

from appliance.api.schemas import SearchHit, SearchIn, SearchOut


@post("/api/v1/knowledge/search", tags=["knowledge"], status_code=200, sync_to_thread=True)
def search(request: Request, state: State, data: SearchIn) -> SearchOut:
    result = state.appliance.search(
        request.user,
        data.query,
        collections=data.collections,
        top_k=data.top_k,
        mode=data.mode,
        rerank=data.rerank,
        filters=data.filters,
    )
    return SearchOut(
        hits=[SearchHit(**h) for h in result.hits],
        timings=result.timings,
        mode=result.mode,
        reranked=result.reranked,
    )
