"""`appliance console --web`: the console in a browser, each session a console process run with the key its browser gave."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import shlex
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import httpx
import jinja2
import textual_serve
from aiohttp import web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

from appliance.errors import InvalidInput
from appliance.tui.web_sessions import WebSessions

log = logging.getLogger("appliance.console.web")

COOKIE = "appliance_console"
TEMPLATES = Path(__file__).parent / "web_templates"
# textual-serve's own static files (its xterm.js bundle, CSS and Roboto Mono): none is fetched from outside.
STATICS = Path(textual_serve.__file__).parent / "static"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


class KeyedAppService(AppService):
    """One console process, run with the key of the browser session that opened it (in its
    environment, where `ps` does not show it)."""

    def __init__(self, *args: Any, key: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._key = key

    def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
        env = super()._build_environment(width=width, height=height)
        env["APPLIANCE_KEY"] = self._key
        return env


class WebConsole(Server):
    """textual-serve's server, with a key asked at the door: `/` shows a sign-in form until the
    browser holds a session; the session's key is checked against the API before it is accepted
    and is the key the console process acts with (so the server's scopes apply as in a terminal).

    Threat model: the session cookie (random, HttpOnly, SameSite=Strict) stands for the key until
    the session ends (idle, too old, signed out at /logout, or its key refused by the API, which is
    asked again at each page load and each console opened); the websocket also checks the page's
    Origin against its own host, so another site cannot drive a session. No TLS here: off loopback,
    put it behind a TLS reverse proxy."""

    def __init__(
        self,
        api_url: str,
        console_args: list[str],
        verify: ssl.SSLContext | bool = True,
        host: str = "127.0.0.1",
        port: int = 8765,
        sessions: WebSessions | None = None,
    ) -> None:
        command = shlex.join([sys.executable, "-m", "appliance", "console", *console_args])
        super().__init__(
            command,
            host=host,
            port=port,
            title="Appliance console",
            statics_path=STATICS,
            templates_path=TEMPLATES,
        )
        self.api_url = api_url.rstrip("/")
        self.verify = verify
        self.sessions = sessions or WebSessions()

    def initialize_logging(self) -> None:
        super().initialize_logging()
        # aiohttp logs each request line at INFO, and a `/?key=` sign-in would put the key in it.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    async def _make_app(self) -> web.Application:
        app = web.Application()
        aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(self.templates_path), autoescape=True)
        app.add_routes(
            [
                web.get("/", self.handle_index, name="index"),
                web.post("/login", self.handle_login, name="login"),
                web.get("/logout", self.handle_logout, name="logout"),
                web.post("/logout", self.handle_logout),
                web.get("/ws", self.handle_websocket, name="websocket"),
                web.get("/download/{key}", self.handle_download, name="download"),
                web.static("/static", self.statics_path, name="static"),
            ]
        )
        app.on_startup.append(self.on_startup)
        return app

    async def on_startup(self, app: web.Application) -> None:
        self.console.print(f"Console for {self.api_url} on {self.public_url} (Ctrl+C to quit)")

    def _session_key(self, request: web.Request) -> str | None:
        return self.sessions.key(request.cookies.get(COOKIE, ""))

    async def _check_key(self, key: str) -> tuple[bool, str | None]:
        """Whether the API refuses `key` and, when it cannot be used, why (for the sign-in form)."""
        try:
            async with httpx.AsyncClient(verify=self.verify, timeout=10) as client:
                r = await client.get(
                    f"{self.api_url}/api/v1/collections", headers={"Authorization": f"Bearer {key}"}
                )
        except httpx.HTTPError as exc:
            return False, f"the appliance at {self.api_url} cannot be reached ({type(exc).__name__})"
        # 403 is a real key without the read scope: the console shows what it may and says the rest.
        return (True, "the appliance refused this key") if r.status_code == 401 else (False, None)

    async def _still_accepted(self, key: str) -> bool:
        """False (and the key's sessions ended) once the API refuses a session's key (revoked, expired)."""
        refused, _ = await self._check_key(key)
        if refused:
            self.sessions.end_key(key)
            log.info("web console sessions ended: the API refused their key")
        return not refused

    def _sign_in_form(self, request: web.Request, error: str | None, status: int = 200) -> web.StreamResponse:
        response = aiohttp_jinja2.render_template("login.html", request, {"error": error}, status=status)
        if COOKIE in request.cookies:
            response.del_cookie(COOKIE, path="/")
        return response

    async def _sign_in(self, request: web.Request, key: str) -> web.StreamResponse:
        _, error = await self._check_key(key) if key else (True, "enter an API key")
        if error:
            return self._sign_in_form(request, error, status=401)
        token = self.sessions.open(key)
        response = web.HTTPSeeOther("/")  # the key leaves the address bar
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    async def handle_login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        key = form.get("key")
        return await self._sign_in(request, key.strip() if isinstance(key, str) else "")

    async def handle_logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.close(request.cookies.get(COOKIE, ""))
        response = web.HTTPSeeOther("/")
        response.del_cookie(COOKIE, path="/")
        return response

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        # `/?key=...` serves scripts and bookmarks on this machine; the form keeps it out of history.
        if "key" in request.query:
            return await self._sign_in(request, request.query["key"].strip())
        key = self._session_key(request)
        if key is None:
            ended = COOKIE in request.cookies  # a cookie of a session that ended: say so
            return self._sign_in_form(request, "the session ended; sign in again" if ended else None)
        if not await self._still_accepted(key):
            return self._sign_in_form(request, "the appliance no longer accepts this key", status=401)
        scheme = "wss" if request.secure else "ws"
        context = {
            "font_size": to_int(request.query.get("fontsize", "16"), 16),
            # Relative to the address the browser used, so an SSH tunnel or a proxy works too.
            "app_websocket_url": f"{scheme}://{request.host}/ws",
            "config": {"static": {"url": "/static/"}},
            "application": {"name": self.title},
        }
        return aiohttp_jinja2.render_template("app_index.html", request, context)

    async def handle_download(self, request: web.Request) -> web.StreamResponse:
        if self._session_key(request) is None:
            raise web.HTTPUnauthorized(text="sign in at / first")
        return await super().handle_download(request)

    async def handle_websocket(self, request: web.Request) -> web.StreamResponse:
        token = request.cookies.get(COOKIE, "")
        key = self.sessions.key(token)
        if key is None:
            raise web.HTTPUnauthorized(text="sign in at / first")
        origin = request.headers.get("Origin", "")
        if origin.split("://", 1)[-1] != request.host:
            raise web.HTTPForbidden(text="the console is driven only from its own page")
        if not await self._still_accepted(key):
            raise web.HTTPUnauthorized(text="the appliance no longer accepts this key; sign in again")
        websocket = web.WebSocketResponse(heartbeat=15)
        width = to_int(request.query.get("width", "80"), 80)
        height = to_int(request.query.get("height", "24"), 24)
        await websocket.prepare(request)
        service = KeyedAppService(
            self.command,
            write_bytes=websocket.send_bytes,
            write_str=websocket.send_str,
            close=websocket.close,
            download_manager=self.download_manager,
            debug=self.debug,
            key=key,
        )
        self.sessions.hold(token)
        # At the session's maximum length its console closes, open or not.
        deadline = asyncio.get_running_loop().call_later(
            self.sessions.remaining(token), lambda: asyncio.ensure_future(websocket.close())
        )
        try:
            await service.start(width, height)
            await self._process_messages(websocket, service)
        except asyncio.CancelledError:
            await websocket.close()
        finally:
            deadline.cancel()
            self.sessions.release(token)
            await service.stop()
        return websocket


def serve_web_console(
    api_url: str,
    console_args: list[str],
    verify: ssl.SSLContext | bool,
    host: str,
    port: int,
    sessions: WebSessions | None = None,
) -> int:
    """Runs until Ctrl+C or SIGTERM."""
    os.environ.pop("APPLIANCE_KEY", None)  # a session's console acts with its own key, never ours
    try:
        WebConsole(api_url, console_args, verify=verify, host=host, port=port, sessions=sessions).serve()
    except OSError as exc:  # the port is taken, the address is not this machine's
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return 0
