"""Knowledge: hybrid search, and cited answers (see answers.py)."""

from __future__ import annotations

from litestar import Router, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from appliance.api.admission import blocking
from appliance.api.routes.answers import knowledge_query
from appliance.api.schemas import SearchIn, SearchOut
from appliance.core.access import Scope
from appliance.core.knowledge import Knowledge


@post("/search", status_code=200, errors=(404, 503), opt={"work": "search"})
async def search(
    caller: NamedDependency[Scope], knowledge: NamedDependency[Knowledge], data: JSONBody[SearchIn]
) -> SearchOut:
    result = await blocking(
        knowledge.search,
        caller,
        data.query,
        collections=data.collections,
        top_k=data.top_k,
        mode=data.mode,
        rerank=data.rerank,
        filters=data.filters,
        cache=data.cache,
    )
    return SearchOut(
        hits=result.hits,
        timings=result.timings,
        mode=result.mode,
        reranked=result.reranked,
        cached=result.cached,
    )


router = Router("/api/v1/knowledge", route_handlers=[search, knowledge_query], tags=["knowledge"])
