"""A small HTTP client of the REST API, used by the CLI (and later the console)."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from appliance.config import Settings, load_settings


class ApiError(Exception):
    """An error answer from the server, carrying its problem details."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(f"{title} ({status}): {detail}")
        self.status = status
        self.title = title
        self.detail = detail


def resolve_endpoint(settings: Settings | None = None, url: str | None = None, key: str | None = None) -> tuple[str, str]:
    """Server URL and key: explicit values, else APPLIANCE_URL / APPLIANCE_KEY, else the config
    file's address and `<data dir>/admin.key`."""
    url = url or os.environ.get("APPLIANCE_URL")
    key = key or os.environ.get("APPLIANCE_KEY")
    if not url or not key:
        settings = settings or load_settings()
        host = settings.server.host if settings.server.host not in ("0.0.0.0", "::") else "127.0.0.1"
        url = url or f"http://{host}:{settings.server.port}"
        if not key:
            key_file = settings.data_path / "admin.key"
            try:
                key = key_file.read_text().strip()
            except OSError:
                raise ApiError(0, "No API key", f"set APPLIANCE_KEY or make {key_file} readable") from None
    return url.rstrip("/"), key


class ApplianceClient:
    def __init__(self, url: str, key: str, timeout: float = 60.0) -> None:
        self.url = url
        self._http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise ApiError(0, "Server unreachable", f"nothing answers at {self.url}; is `appliance serve` running?") from None
        except httpx.TimeoutException:
            raise ApiError(0, "Timeout", f"{self.url} did not answer in time") from None
        if response.status_code >= 400:
            self._raise(response)
        return response.json()

    @staticmethod
    def _raise(response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            raise ApiError(response.status_code, "Error", response.text) from None
        raise ApiError(response.status_code, body.get("title", "Error"), body.get("detail", response.text))

    def collections(self) -> list[dict]:
        return self._call("GET", "/api/v1/collections")

    def create_collection(self, name: str, description: str = "") -> dict:
        return self._call("POST", "/api/v1/collections", json={"name": name, "description": description})

    def submit_batch(self, collection: str, documents: list[dict], wait: bool = False) -> dict:
        return self._call("POST", "/api/v1/documents/batch", params={"wait": str(wait).lower()},
                          json={"collection": collection, "documents": documents})

    def job(self, job_id: str, items: bool = False) -> dict:
        return self._call("GET", f"/api/v1/jobs/{job_id}", params={"items": str(items).lower()})

    def jobs(self, state: str | None = None, limit: int = 50) -> list[dict]:
        params: dict = {"limit": limit}
        if state:
            params["job_state"] = state
        return self._call("GET", "/api/v1/jobs", params=params)

    def search(self, query: str, collections: list[str] | None = None, top_k: int = 10, mode: str | None = None) -> dict:
        body: dict = {"query": query, "top_k": top_k}
        if collections:
            body["collections"] = collections
        if mode:
            body["mode"] = mode
        return self._call("POST", "/api/v1/knowledge/search", json=body)

    def ask(self, question: str, collections: list[str] | None = None, top_k: int | None = None,
            model: str | None = None):
        """Yields the server-sent events of a streamed cited answer."""
        body: dict = {"query": question, "stream": True}
        if collections:
            body["collections"] = collections
        if top_k:
            body["top_k"] = top_k
        if model:
            body["model"] = model
        try:
            with self._http.stream("POST", "/api/v1/knowledge/query", json=body, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise(response)
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        yield json.loads(line[6:])
        except httpx.ConnectError:
            raise ApiError(0, "Server unreachable", f"nothing answers at {self.url}; is `appliance serve` running?") from None

    def create_key(self, name: str, role: str, collections: list[str] | None, rpm: int | None, tpm: int | None) -> dict:
        return self._call("POST", "/api/v1/keys", json={"name": name, "role": role, "collections": collections,
                                                        "rpm": rpm, "tpm": tpm})

    def keys(self) -> list[dict]:
        return self._call("GET", "/api/v1/keys")

    def revoke_key(self, key_id: str) -> dict:
        return self._call("DELETE", f"/api/v1/keys/{key_id}")

    def documents(self, collection: str | None = None, limit: int = 100) -> dict:
        params: dict = {"limit": limit}
        if collection:
            params["collection"] = collection
        return self._call("GET", "/api/v1/documents", params=params)

    def sources(self) -> list[dict]:
        return self._call("GET", "/api/v1/sources")["sources"]

    def add_source(self, body: dict) -> dict:
        return self._call("POST", "/api/v1/sources", json=body)

    def sync_source(self, name: str) -> dict:
        return self._call("POST", f"/api/v1/sources/{name}/sync")

    def remove_source(self, name: str, delete_documents: bool = False) -> dict:
        return self._call("DELETE", f"/api/v1/sources/{name}",
                          params={"delete_documents": str(delete_documents).lower()})

    def quarantine(self, collection: str | None = None, source: str | None = None, limit: int = 200) -> list[dict]:
        params: dict = {"limit": limit}
        if collection:
            params["collection"] = collection
        if source:
            params["source"] = source
        return self._call("GET", "/api/v1/quarantine", params=params)["files"]

    def verify_chunks(self, collection: str | None = None, repair: bool = False) -> dict:
        return self._call("POST", "/api/v1/admin/verify-chunks", json={"collection": collection, "repair": repair})

    def cancel_job(self, job_id: str) -> dict:
        return self._call("POST", f"/api/v1/jobs/{job_id}/cancel")

    def retry_job(self, job_id: str) -> dict:
        return self._call("POST", f"/api/v1/jobs/{job_id}/retry")
