"""Documents: submit (JSON, multipart upload, batch), list, read, delete."""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass, field
from typing import Annotated

import msgspec
from litestar import Response, Router, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from appliance import json_input
from appliance.api.admission import blocking, leave_early
from appliance.api.errors import PROBLEM_JSON, problem_body
from appliance.api.requests import ApiRequest
from appliance.api.schemas import Accepted, BatchIn, DeletedDocument, DocumentIn, Offset, SingleDocumentIn
from appliance.core.access import Scope
from appliance.core.jobs import Jobs
from appliance.core.knowledge import Knowledge
from appliance.errors import InvalidInput
from appliance.ingest.intake import NewDocument
from appliance.records import Document, DocumentPage


def _to_new(doc: DocumentIn, index: int | None = None) -> NewDocument:
    where = f"documents[{index}]: " if index is not None else ""
    if doc.content_base64 is not None:
        if doc.text is not None:
            raise InvalidInput(f"{where}give either text or content_base64, not both")
        try:
            content = base64.b64decode(doc.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{where}content_base64 is not valid base64") from None
        return NewDocument(
            doc.source_id, doc.title, None, content, doc.filename, doc.uri, "upload", doc.metadata
        )
    if doc.text is None:
        raise InvalidInput(f"{where}text (or content_base64) is required")
    return NewDocument(doc.source_id, doc.title, doc.text, None, doc.filename, doc.uri, "api", doc.metadata)


def _decode_single(body: bytes, depth: int) -> tuple[str, NewDocument]:
    value = json_input.decode(body, depth, "the request body")  # UTF-8, JSON, nesting bounded
    try:
        data = msgspec.convert(value, type=SingleDocumentIn)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"malformed document: {exc}") from None
    return data.collection, _to_new(data)


async def _accepted(caller: Scope, jobs: Jobs, job_id: str, document_ids: list[str], wait: bool) -> Response:
    leave_early()  # submitted: waiting for the job takes no place among the submissions
    if not wait:
        return Response(Accepted(job_id, document_ids), status_code=202)
    # Polled from the event loop, not waited for in a thread: the thread pool is small, and a
    # few waiting uploads must not hold it.
    deadline = asyncio.get_running_loop().time() + jobs.wait_timeout
    while asyncio.get_running_loop().time() < deadline and not await asyncio.to_thread(jobs.finished, job_id):
        await asyncio.sleep(0.25)
    job = await asyncio.to_thread(jobs.get, caller, job_id)
    finished = job.state in ("succeeded", "failed")
    if job.state == "failed" and job.progress.total == 1:
        # A single document that could not be ingested: say why, as an error.
        items = (await asyncio.to_thread(jobs.get, caller, job_id, True)).items
        reason = items[0].error if items else job.error
        body = {
            **problem_body(422, "Document rejected", reason),
            "job_id": job_id,
            "document_ids": document_ids,
        }
        return Response(body, status_code=422, media_type=PROBLEM_JSON)
    return Response(Accepted(job_id, document_ids, job), status_code=200 if finished else 202)


@dataclass
class _UploadOperation(Operation):
    """The route takes JSON or multipart; Litestar cannot infer two bodies, so describe both."""

    request_body: RequestBody | None = field(
        default_factory=lambda: RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(
                    schema=Schema(
                        type="object",
                        required=["collection"],
                        description="`text`, or `content_base64` with a `filename` for binary formats",
                        properties={
                            "collection": Schema(type="string"),
                            "text": Schema(type="string"),
                            "content_base64": Schema(type="string", format="byte"),
                            "filename": Schema(type="string"),
                            "source_id": Schema(type="string"),
                            "title": Schema(type="string"),
                            "uri": Schema(type="string"),
                            "metadata": Schema(type="object"),
                        },
                    )
                ),
                "multipart/form-data": OpenAPIMediaType(
                    schema=Schema(
                        type="object",
                        required=["collection", "file"],
                        properties={
                            "collection": Schema(type="string"),
                            "file": Schema(type="string", format="binary"),
                            "source_id": Schema(type="string"),
                            "title": Schema(type="string"),
                            "metadata": Schema(type="string", description="JSON object"),
                        },
                    )
                ),
            },
        )
    )

    def __post_init__(self) -> None:
        self.request_body = _UploadOperation.__dataclass_fields__["request_body"].default_factory()


@post("/", status_code=202, operation_class=_UploadOperation, errors=(404, 415, 422), opt={"work": "ingest"})
async def create_document(
    request: ApiRequest,
    caller: NamedDependency[Scope],
    knowledge: NamedDependency[Knowledge],
    jobs: NamedDependency[Jobs],
    wait: FromQuery[bool] = False,
) -> Response:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("multipart upload needs a 'file' part")
        collection = str(form.get("collection") or "")
        metadata = request.json_field(form.get("metadata") or "{}", "metadata")
        if not isinstance(metadata, dict):
            raise InvalidInput("metadata must be a JSON object")
        content = await upload.read()
        doc = NewDocument(
            source_id=form.get("source_id") or upload.filename,
            title=form.get("title") or None,
            content=content,
            filename=upload.filename,
            source_kind="upload",
            metadata=metadata,
        )
    else:
        # Decoding up to max_body_bytes of JSON and base64 is CPU work: off the event loop.
        collection, doc = await asyncio.to_thread(_decode_single, await request.body(), request.json_depth)
    if not collection:
        raise InvalidInput("collection is required")
    job_id, ids = await blocking(knowledge.submit, caller, collection, [doc], True)
    return await _accepted(caller, jobs, job_id, ids, wait)


@post("/batch", status_code=202, errors=(404, 415), opt={"work": "ingest"})
async def create_documents(
    caller: NamedDependency[Scope],
    knowledge: NamedDependency[Knowledge],
    jobs: NamedDependency[Jobs],
    data: JSONBody[BatchIn],
    wait: FromQuery[bool] = False,
) -> Response:
    docs = [_to_new(d, i) for i, d in enumerate(data.documents)]
    job_id, ids = await blocking(knowledge.submit, caller, data.collection, docs)
    return await _accepted(caller, jobs, job_id, ids, wait)


@get("/", sync_to_thread=True, errors=(404,))
def list_documents(
    caller: NamedDependency[Scope],
    knowledge: NamedDependency[Knowledge],
    collection: FromQuery[str | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    offset: FromQuery[Offset] = 0,
) -> DocumentPage:
    return knowledge.list_documents(caller, collection, limit=limit, offset=offset)


@get("/{document_id:str}", sync_to_thread=True)
def get_document(
    caller: NamedDependency[Scope],
    knowledge: NamedDependency[Knowledge],
    document_id: FromPath[str],
    chunks: FromQuery[bool] = False,
) -> Document:
    return knowledge.get_document(caller, document_id, with_chunks=chunks)


@delete("/{document_id:str}", status_code=200, sync_to_thread=True)
def delete_document(
    caller: NamedDependency[Scope], knowledge: NamedDependency[Knowledge], document_id: FromPath[str]
) -> DeletedDocument:
    return DeletedDocument(deleted=True, document=knowledge.delete_document(caller, document_id))


router = Router(
    "/api/v1/documents",
    tags=["documents"],
    route_handlers=[
        create_document,
        create_documents,
        list_documents,
        get_document,
        delete_document,
    ],
)
