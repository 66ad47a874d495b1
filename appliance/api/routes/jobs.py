"""Jobs: state and progress of background work."""

from __future__ import annotations

from litestar import Request, get, post
from litestar.datastructures import State


@get("/api/v1/jobs/{job_id:str}", tags=["jobs"], sync_to_thread=True)
def get_job(request: Request, state: State, job_id: str, items: bool = False) -> dict:
    return state.appliance.get_job(request.user, job_id, with_items=items)


@get("/api/v1/jobs", tags=["jobs"], sync_to_thread=True)
def list_jobs(request: Request, state: State, job_state: str | None = None, limit: int = 50) -> list[dict]:
    return state.appliance.list_jobs(request.user, state=job_state, limit=min(max(limit, 1), 500))


@post("/api/v1/jobs/{job_id:str}/cancel", tags=["jobs"], status_code=200, sync_to_thread=True)
def cancel_job(request: Request, state: State, job_id: str) -> dict:
    """Stop a queued or running job; documents already ingested stay."""
    return state.appliance.cancel_job(request.user, job_id)


@post("/api/v1/jobs/{job_id:str}/retry", tags=["jobs"], status_code=200, sync_to_thread=True)
def retry_job(request: Request, state: State, job_id: str) -> dict:
    """Queue an ended job again: its failed documents, and those a cancellation left."""
    return state.appliance.retry_job(request.user, job_id)
