"""The API documentation page, /schema/docs: Swagger UI from files shipped with the appliance."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from litestar import Request, Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.params import FromPath

ASSETS = resources.files("appliance.api") / "static" / "swagger-ui"
# The only files the page loads, besides itself; anything else under assets/ is a 404.
ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}
# The browser itself refuses anything from elsewhere: the page must work on a machine with no
# network, and a documentation page has no business calling out. Inline script for the init.
CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)


class OfflineSwaggerPlugin(OpenAPIRenderPlugin):
    """Swagger UI at `<openapi path>/docs`, the schema inlined (so it needs no second keyed fetch)
    and the assets under `<openapi path>/docs/assets/`, behind the same key as every route."""

    def __init__(self, path: str = "/docs") -> None:
        super().__init__(path=path, favicon="", style="<style>body { margin: 0; }</style>")

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        assets = f"{request.url.path.rstrip('/')}/assets"
        # Inside <script>, "</" in a description would end the script: JSON allows "<\/".
        spec = self.render_json(request, openapi_schema).replace(b"</", b"<\\/")
        title = str(openapi_schema["info"]["title"]).replace("<", "&lt;")
        head = (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{title}</title>{self.style}"
            f"<link rel='stylesheet' href='{assets}/swagger-ui.css'>"
            f"<script src='{assets}/swagger-ui-bundle.js'></script>"
            "</head><body><div id='swagger-ui'></div><script>\nwindow.ui = SwaggerUIBundle({spec: "
        )
        # validatorUrl null: Swagger UI would otherwise send the schema to its public validator.
        tail = (
            ", dom_id: '#swagger-ui', validatorUrl: null, deepLinking: true, "
            "showExtensions: true, showCommonExtensions: true});\n</script></body></html>"
        )
        return head.encode() + spec + tail.encode()

    def receive_router(self, router: Router) -> None:
        for path in self.paths:
            router.register(
                get(f"{path}/assets/{{name:str}}", sync_to_thread=False, include_in_schema=False)(asset)
            )


def asset(name: FromPath[str]) -> Response[bytes]:
    if name not in ASSET_TYPES:
        raise NotFoundException(f"no documentation asset {name!r}")
    return Response(
        _read(name),
        media_type=ASSET_TYPES[name],
        headers={"Cache-Control": "private, max-age=86400"},
    )


@cache
def _read(name: str) -> bytes:
    return (ASSETS / name).read_bytes()
