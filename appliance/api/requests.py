"""The request class of every route: JSON bodies and forms go through one door, valid UTF-8 and
nested within `limits.max_json_depth`, so hostile input is a 400 before any handler, store or index
sees it."""

from __future__ import annotations

from typing import Any

from litestar import Request

from appliance import json_input


class ApiRequest(Request):
    @property
    def json_depth(self) -> int:
        return self.app.state.appliance.settings.limits.max_json_depth

    async def json(self) -> Any:
        # Litestar decodes the body once (msgspec, into plain values) for every `data` parameter and
        # caches it; its decoder lets RecursionError and UnicodeDecodeError through as 500s.
        limit = self.json_depth
        try:
            value = await super().json()
        except RecursionError:
            raise json_input.too_deep("the request body", limit) from None
        except UnicodeDecodeError:
            raise json_input.not_utf8("the request body") from None
        return json_input.check_depth(value, limit, "the request body")

    async def form(self) -> Any:
        try:
            return await super().form()
        except UnicodeDecodeError:
            # Litestar decodes each field as UTF-8 and lets the error through as a 500.
            raise json_input.not_utf8("a multipart form field") from None

    def json_field(self, text: str, name: str) -> Any:
        """A form field that carries JSON (a multipart upload's `metadata`), under the same rules."""
        return json_input.decode(text, self.json_depth, name)
