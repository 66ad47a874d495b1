"""Jobs: state and progress of background work."""

from __future__ import annotations

from litestar import Request, get
from litestar.datastructures import State


@get("/api/v1/jobs/{job_id:str}", tags=["jobs"], sync_to_thread=True)
def get_job(request: Request, state: State, job_id: str, items: bool = False) -> dict:
    return state.appliance.get_job(request.user, job_id, with_items=items)


@get("/api/v1/jobs", tags=["jobs"], sync_to_thread=True)
def list_jobs(request: Request, state: State, job_state: str | None = None, limit: int = 50) -> list[dict]:
    return state.appliance.list_jobs(request.user, state=job_state, limit=min(max(limit, 1), 500))
