"""Documents: submit (JSON, multipart upload, batch), list, read, delete."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass, field

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State, UploadFile
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema

from appliance.api.schemas import Accepted, BatchIn, DocumentIn, SingleDocumentIn
from appliance.core import Appliance
from appliance.errors import InvalidInput
from appliance.ingest.intake import NewDocument


def _to_new(doc: DocumentIn, index: int | None = None) -> NewDocument:
    where = f"documents[{index}]: " if index is not None else ""
    if doc.content_base64 is not None:
        if doc.text is not None:
            raise InvalidInput(f"{where}give either text or content_base64, not both")
        try:
            content = base64.b64decode(doc.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{where}content_base64 is not valid base64") from None
        return NewDocument(doc.source_id, doc.title, None, content, doc.filename, doc.uri, "upload", doc.metadata)
    if doc.text is None:
        raise InvalidInput(f"{where}text (or content_base64) is required")
    return NewDocument(doc.source_id, doc.title, doc.text, None, doc.filename, doc.uri, "api", doc.metadata)


async def _accepted(appliance: Appliance, job_id: str, document_ids: list[str], wait: bool) -> Response:
    if not wait:
        return Response(Accepted(job_id, document_ids), status_code=202)
    deadline = asyncio.get_running_loop().time() + appliance.settings.limits.wait_timeout_seconds
    while asyncio.get_running_loop().time() < deadline:
        if await asyncio.to_thread(appliance.job_finished, job_id):
            break
        await asyncio.sleep(0.25)
    job = await asyncio.to_thread(appliance.jobs.get, job_id)
    finished = job["state"] in ("succeeded", "failed")
    if job["state"] == "failed" and job["progress"]["total"] == 1:
        # A single document that could not be ingested: say why, as an error.
        items = await asyncio.to_thread(appliance.jobs.items, job_id)
        reason = items[0]["error"] if items else job["error"]
        return Response(
            {"type": "about:blank", "title": "Document rejected", "status": 422, "detail": reason,
             "job_id": job_id, "document_ids": document_ids},
            status_code=422, media_type="application/problem+json",
        )
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


@post("/api/v1/documents", tags=["documents"], status_code=202, operation_class=_UploadOperation)
async def create_document(request: Request, state: State, wait: bool = False) -> Response:
    appliance: Appliance = state.appliance
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("multipart upload needs a 'file' part")
        collection = str(form.get("collection") or "")
        try:
            metadata = json.loads(form.get("metadata") or "{}")
        except json.JSONDecodeError:
            raise InvalidInput("metadata must be a JSON object") from None
        if not isinstance(metadata, dict):
            raise InvalidInput("metadata must be a JSON object")
        content = await upload.read()
        doc = NewDocument(
            source_id=form.get("source_id") or upload.filename, title=form.get("title") or None,
            content=content, filename=upload.filename, source_kind="upload", metadata=metadata,
        )
    else:
        try:
            data = msgspec.json.decode(await request.body(), type=SingleDocumentIn)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"malformed document: {exc}") from None
        except msgspec.DecodeError:
            raise InvalidInput("request body is not valid JSON") from None
        collection, doc = data.collection, _to_new(data)
    if not collection:
        raise InvalidInput("collection is required")
    job_id, ids = await asyncio.to_thread(appliance.submit_documents, request.user, collection, [doc], True)
    return await _accepted(appliance, job_id, ids, wait)


@post("/api/v1/documents/batch", tags=["documents"], status_code=202)
async def create_documents(request: Request, state: State, data: BatchIn, wait: bool = False) -> Response:
    appliance: Appliance = state.appliance
    docs = [_to_new(d, i) for i, d in enumerate(data.documents)]
    job_id, ids = await asyncio.to_thread(appliance.submit_documents, request.user, data.collection, docs)
    return await _accepted(appliance, job_id, ids, wait)


@get("/api/v1/documents", tags=["documents"], sync_to_thread=True)
def list_documents(request: Request, state: State, collection: str | None = None, limit: int = 100, offset: int = 0) -> dict:
    return state.appliance.list_documents(request.user, collection, limit=min(max(limit, 1), 1000), offset=max(offset, 0))


@get("/api/v1/documents/{document_id:str}", tags=["documents"], sync_to_thread=True)
def get_document(request: Request, state: State, document_id: str, chunks: bool = False) -> dict:
    return state.appliance.get_document(request.user, document_id, with_chunks=chunks)


@delete("/api/v1/documents/{document_id:str}", tags=["documents"], status_code=200, sync_to_thread=True)
def delete_document(request: Request, state: State, document_id: str) -> dict:
    doc = state.appliance.delete_document(request.user, document_id)
    return {"deleted": True, "document": doc}
