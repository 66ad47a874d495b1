"""Jobs: state and progress of background work."""

from __future__ import annotations

from typing import Annotated

from litestar import Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter

from appliance.core.access import Scope
from appliance.core.jobs import Jobs
from appliance.records import Job


@get("/{job_id:str}", sync_to_thread=True)
def get_job(
    caller: NamedDependency[Scope],
    jobs: NamedDependency[Jobs],
    job_id: FromPath[str],
    items: FromQuery[bool] = False,
) -> Job:
    return jobs.get(caller, job_id, with_items=items)


@get("/", sync_to_thread=True)
def list_jobs(
    caller: NamedDependency[Scope],
    jobs: NamedDependency[Jobs],
    job_state: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
) -> list[Job]:
    return jobs.list(caller, state=job_state, limit=limit)


@post("/{job_id:str}/cancel", status_code=200, sync_to_thread=True, errors=(409,))
def cancel_job(caller: NamedDependency[Scope], jobs: NamedDependency[Jobs], job_id: FromPath[str]) -> Job:
    """Stop a queued or running job; documents already ingested stay."""
    return jobs.cancel(caller, job_id)


@post("/{job_id:str}/retry", status_code=200, sync_to_thread=True, errors=(409,))
def retry_job(caller: NamedDependency[Scope], jobs: NamedDependency[Jobs], job_id: FromPath[str]) -> Job:
    """Queue an ended job again: its failed documents, and those a cancellation left."""
    return jobs.retry(caller, job_id)


router = Router("/api/v1/jobs", route_handlers=[get_job, list_jobs, cancel_job, retry_job], tags=["jobs"])
