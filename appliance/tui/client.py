"""A typed async HTTP client of the appliance API, as the console uses it (never the files)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx


class ConsoleError(Exception):
    """Anything the console shows the operator instead of a traceback: an error answer from the
    server (with its problem details), or no answer at all (`status` 0)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(f"{title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail

    @property
    def unreachable(self) -> bool:
        return self.status == 0

    @property
    def missing(self) -> bool:
        """The route does not exist on this server (an older version): panels say "not available"."""
        return self.status in (404, 405)


class ApiClient:
    """One method per route the console uses; every failure is a ConsoleError."""

    def __init__(self, url: str, key: str, timeout: float = 30.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {key}"},
                                       timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ConsoleError(0, "Timeout", f"{self.url} did not answer in time") from None
        except httpx.TransportError:
            raise ConsoleError(0, "Server unreachable",
                               f"nothing answers at {self.url}; is `appliance serve` running?") from None
        if response.status_code >= 400:
            raise _error(response)
        return response.json()

    # -- health and admin ---------------------------------------------------------------
    async def ready(self) -> dict:
        """/readyz needs no key, so an answer here with 401 elsewhere means the key is wrong."""
        try:
            response = await self._http.get("/readyz")
        except httpx.TransportError:
            raise ConsoleError(0, "Server unreachable",
                               f"nothing answers at {self.url}; is `appliance serve` running?") from None
        return response.json()

    async def stats(self) -> dict:
        return await self._call("GET", "/api/v1/admin/stats")

    async def logs(self, level: str | None = None, limit: int = 200, after: int = 0) -> dict:
        params: dict[str, Any] = {"limit": limit, "after": after}
        if level:
            params["level"] = level
        return await self._call("GET", "/api/v1/admin/logs", params=params)

    async def models(self) -> dict:
        return await self._call("GET", "/api/v1/admin/models")

    async def load_model(self, name: str | None) -> dict:
        return await self._call("POST", "/api/v1/admin/models/load", json={"model": name})

    async def unload_model(self) -> dict:
        return await self._call("POST", "/api/v1/admin/models/unload")

    # -- knowledge ----------------------------------------------------------------------
    async def collections(self) -> list[dict]:
        return await self._call("GET", "/api/v1/collections")

    async def create_collection(self, name: str) -> dict:
        return await self._call("POST", "/api/v1/collections", json={"name": name})

    async def documents(self, collection: str | None = None, limit: int = 200, offset: int = 0) -> dict:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if collection:
            params["collection"] = collection
        return await self._call("GET", "/api/v1/documents", params=params)

    async def document(self, document_id: str, chunks: bool = True) -> dict:
        return await self._call("GET", f"/api/v1/documents/{document_id}", params={"chunks": str(chunks).lower()})

    async def delete_document(self, document_id: str) -> dict:
        return await self._call("DELETE", f"/api/v1/documents/{document_id}")

    async def upload(self, collection: str, path: Path, source_id: str | None = None) -> dict:
        """A local file, uploaded as multipart (the server parses it); answers with the job.
        The same `source_id` again replaces the document (re-ingest)."""
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ConsoleError(-1, "Cannot read file", f"{path}: {exc.strerror or exc}") from None
        return await self._call("POST", "/api/v1/documents",
                                data={"collection": collection, "source_id": source_id or str(path)},
                                files={"file": (path.name, content)})

    async def sources(self) -> list[dict]:
        return (await self._call("GET", "/api/v1/sources"))["sources"]

    async def sync_source(self, name: str) -> dict:
        return await self._call("POST", f"/api/v1/sources/{name}/sync")

    async def quarantine(self, collection: str | None = None, limit: int = 200) -> list[dict]:
        params: dict[str, Any] = {"limit": limit}
        if collection:
            params["collection"] = collection
        return (await self._call("GET", "/api/v1/quarantine", params=params))["files"]

    async def search(self, query: str, collections: list[str] | None = None, top_k: int = 10) -> dict:
        body: dict[str, Any] = {"query": query, "top_k": top_k}
        if collections:
            body["collections"] = collections
        return await self._call("POST", "/api/v1/knowledge/search", json=body)

    async def ask(self, question: str, collections: list[str] | None = None) -> AsyncIterator[dict]:
        """The server-sent events of a streamed cited answer: sources, token..., answer (or error)."""
        body: dict[str, Any] = {"query": question, "stream": True}
        if collections:
            body["collections"] = collections
        async for event in self._events("/api/v1/knowledge/query", body):
            yield event

    # -- chat ---------------------------------------------------------------------------
    async def create_conversation(self, collections: list[str] | None, title: str = "") -> dict:
        return await self._call("POST", "/api/v1/conversations", json={"collections": collections, "title": title})

    async def conversations(self) -> list[dict]:
        return await self._call("GET", "/api/v1/conversations")

    async def conversation(self, conversation_id: str) -> dict:
        return await self._call("GET", f"/api/v1/conversations/{conversation_id}")

    async def send_message(self, conversation_id: str, content: str, model: str | None = None) -> AsyncIterator[dict]:
        body: dict[str, Any] = {"content": content, "stream": True}
        if model:
            body["model"] = model
        async for event in self._events(f"/api/v1/conversations/{conversation_id}/messages", body):
            yield event

    async def chat_models(self) -> list[dict]:
        data = (await self._call("GET", "/v1/models"))["data"]
        return [m for m in data if "chat" in m.get("capabilities", [])]

    # -- jobs ---------------------------------------------------------------------------
    async def jobs(self, state: str | None = None, limit: int = 100) -> list[dict]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["job_state"] = state
        return await self._call("GET", "/api/v1/jobs", params=params)

    async def job(self, job_id: str) -> dict:
        return await self._call("GET", f"/api/v1/jobs/{job_id}", params={"items": "true"})

    async def cancel_job(self, job_id: str) -> dict:
        return await self._call("POST", f"/api/v1/jobs/{job_id}/cancel")

    async def retry_job(self, job_id: str) -> dict:
        return await self._call("POST", f"/api/v1/jobs/{job_id}/retry")

    # -- keys and audit -----------------------------------------------------------------
    async def keys(self) -> list[dict]:
        return await self._call("GET", "/api/v1/keys")

    async def create_key(self, name: str, role: str, collections: list[str] | None) -> dict:
        return await self._call("POST", "/api/v1/keys", json={"name": name, "role": role, "collections": collections})

    async def revoke_key(self, key_id: str) -> dict:
        return await self._call("DELETE", f"/api/v1/keys/{key_id}")

    async def audit(self, limit: int = 100) -> list[dict]:
        return await self._call("GET", "/api/v1/audit", params={"limit": limit})

    # -- streaming ----------------------------------------------------------------------
    async def _events(self, path: str, body: dict) -> AsyncIterator[dict]:
        try:
            async with self._http.stream("POST", path, json=body, timeout=None) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error(response)
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        yield json.loads(line[6:])
        except httpx.TransportError:
            raise ConsoleError(0, "Server unreachable", f"the connection to {self.url} was lost") from None


def _error(response: httpx.Response) -> ConsoleError:
    try:
        body = response.json()
        title, detail = body.get("title", "Error"), body.get("detail") or str(body)
    except ValueError:
        title, detail = "Error", response.text or response.reason_phrase
    if response.status_code == 401:
        title, detail = "Key rejected", f"the server refused the API key ({detail}); pass --key or set APPLIANCE_KEY"
    elif response.status_code == 403:
        title = "Admin key needed"
    return ConsoleError(response.status_code, title, detail)
