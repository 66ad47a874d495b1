"""Answer traces and feedback: read an answer's trace, rate it, list the ratings."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from appliance.core.access import Scope
from appliance.core.feedback import Feedback
from appliance.records import FeedbackCount, FeedbackPage, Rating, Trace


class FeedbackIn(msgspec.Struct, forbid_unknown_fields=True):
    rating: Literal["up", "down"]
    comment: str | None = None
    correct_answer: str | None = None  # what the answer should have said (a regression item's answer)
    # Source ids among the answer's sources that hold the right answer (a regression item's gold).
    confirmed_sources: list[str] | None = None


@get(
    "/{answer_id:str}",
    sync_to_thread=True,
    summary="An answer's trace: question, rewritten query, retrieval, sources, answer, timings, ratings",
)
def get_answer(
    caller: NamedDependency[Scope], feedback: NamedDependency[Feedback], answer_id: FromPath[str]
) -> Trace:
    return feedback.get_answer(caller, answer_id)


@post("/{answer_id:str}/feedback", status_code=201, sync_to_thread=True, summary="Rate an answer up or down")
def rate_answer(
    caller: NamedDependency[Scope],
    feedback: NamedDependency[Feedback],
    answer_id: FromPath[str],
    data: JSONBody[FeedbackIn],
) -> Rating:
    """The same key rating an answer again replaces its earlier rating."""
    return feedback.rate(
        caller, answer_id, data.rating, data.comment, data.correct_answer, data.confirmed_sources
    )


@get("/", sync_to_thread=True, summary="Ratings of answers, newest first, with the answers they rate")
def list_feedback(
    caller: NamedDependency[Scope],
    feedback: NamedDependency[Feedback],
    collection: FromQuery[str | None] = None,
    rating: FromQuery[Literal["up", "down"] | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 50,
    offset: Annotated[int, QueryParameter(ge=0)] = 0,
) -> FeedbackPage:
    return feedback.list_feedback(caller, collection, rating, limit, offset)


@get(
    "/summary",
    sync_to_thread=True,
    summary="Ratings up and down and answers given per collection over the last `days` days",
)
def feedback_summary(
    caller: NamedDependency[Scope],
    feedback: NamedDependency[Feedback],
    days: Annotated[int, QueryParameter(ge=1, le=365)] = 7,
) -> list[FeedbackCount]:
    return feedback.counts(caller, days)


answers_router = Router("/api/v1/answers", route_handlers=[get_answer, rate_answer], tags=["feedback"])
feedback_router = Router(
    "/api/v1/feedback", route_handlers=[list_feedback, feedback_summary], tags=["feedback"]
)
