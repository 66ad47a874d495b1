"""`appliance console --web` in a real headless Chromium: the dashboard renders, a search typed in the
page returns hits, nothing is fetched from outside the appliance, and no key means no console."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, _die_with_parent, free_port

ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")
# Screenshots of the run, kept for a person to look at (CI uploads the folder).
ARTEFACTS = REPO / "test-artefacts"
POLICY = "# Travel policy\n\nEmployees travelling in Europe receive a per diem of 75 EUR a day for meals.\n"


@pytest.fixture(scope="module")
def web(server, tmp_path_factory):
    """The appliance (tests/conftest.py's module server, one document) and its web console."""
    with server.client() as c:
        c.post("/api/v1/collections", json={"name": "docs"})
        r = c.post(
            "/api/v1/documents",
            params={"wait": "true"},
            json={"collection": "docs", "source_id": "travel.md", "text": POLICY},
        )
        assert r.status_code == 200, r.text
    port = free_port()
    log = tmp_path_factory.mktemp("web") / "web.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "console", "--web", "--url", server.url, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            preexec_fn=_die_with_parent,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    yield url, server.key, log
    proc.terminate()
    proc.wait(20)


def signed_in(url: str, key: str) -> httpx.Client:
    """A client holding a console session (its cookie), as a browser does after signing in."""
    client = httpx.Client(base_url=url, timeout=10)
    r = client.get("/", params={"key": key}, follow_redirects=True)
    assert r.status_code == 200 and 'id="terminal"' in r.text, r.text
    assert str(r.url) == f"{url}/"  # redirected: the key left the address
    return client


def test_the_key_is_required(web):
    url, key, log = web
    form = httpx.get(url)
    assert form.status_code == 200 and 'name="key"' in form.text and 'id="terminal"' not in form.text
    wrong = httpx.post(f"{url}/login", data={"key": "not-a-key"})
    assert wrong.status_code == 401 and "refused this key" in wrong.text
    # The websocket that runs a console opens only for a signed-in browser, from the page's own origin.
    assert httpx.get(f"{url}/ws").status_code == 401
    with closing(signed_in(url, key)) as client:
        assert client.get("/ws", headers={"Origin": "http://evil.example"}).status_code == 403
    good = httpx.post(f"{url}/login", data={"key": key})
    assert good.status_code == 303 and good.cookies.get("appliance_console")
    assert "/?key=" not in log.read_text() and key not in log.read_text()  # not in its request log


def test_sign_out_and_a_revoked_key_end_the_session(web, server):
    url, key, _ = web
    with closing(signed_in(url, key)) as client:
        signed_out = client.get("/logout", follow_redirects=True)
        assert 'name="key"' in signed_out.text and 'id="terminal"' not in signed_out.text
        assert not client.cookies.get("appliance_console")  # the cookie was deleted
    with closing(signed_in(url, key)) as client:
        cookie = client.cookies["appliance_console"]
        client.post("/logout")
    stale = httpx.get(url, cookies={"appliance_console": cookie})
    assert "the session ended" in stale.text and 'id="terminal"' not in stale.text
    assert httpx.get(f"{url}/ws", cookies={"appliance_console": cookie}).status_code == 401
    # A key revoked in the API ends its sessions at the next page load.
    with server.client() as admin:
        made = admin.post("/api/v1/keys", json={"name": "web-user", "role": "user", "collections": ["docs"]})
        assert made.status_code == 201, made.text
        with closing(signed_in(url, made.json()["key"])) as client:
            assert admin.delete(f"/api/v1/keys/{made.json()['id']}").status_code == 200
            refused = client.get("/")
            assert refused.status_code == 401 and "no longer accepts this key" in refused.text
            again = client.get("/")  # its cookie was deleted: the plain sign-in form
            assert again.status_code == 200 and 'name="key"' in again.text and "ended" not in again.text


def test_the_page_references_nothing_outside(web):
    url, key, _ = web
    with closing(signed_in(url, key)) as client:
        page = client.get("/").text
        assert re.findall(r"https?://|//[a-z]", page) == []
        js = client.get("/static/js/textual.js")
        assert js.status_code == 200 and re.findall(r"https?://[a-z]", js.text) == []
        css = re.sub(r"/\*.*?\*/", "", client.get("/static/css/xterm.css").text, flags=re.S)
        assert "://" not in css
        for font in re.findall(r'url\("(/static/fonts/[^"]+)"\)', page):
            assert client.get(font).status_code == 200


def test_refuses_a_non_loopback_host_without_allow_remote():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "console",
            "--web",
            "--host",
            "0.0.0.0",
            "--url",
            "http://127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 1 and "not a loopback address" in r.stderr and "Traceback" not in r.stderr


class Chromium:
    """Headless Chromium driven over the DevTools protocol (aiohttp's websocket client)."""

    def __init__(self, profile: Path) -> None:
        binary = shutil.which("chromium")
        if binary is None:
            pytest.skip("chromium is not installed (Debian's chromium package)")
        self.tmp = tempfile.mkdtemp(prefix="chromium-", dir="/tmp")
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "--window-size=1280,800",
                # Any host but loopback fails to resolve: a CDN reference would show as a failed request.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Its singleton socket goes in a directory of its own, removed on close; a short path,
            # as a socket path has at most 107 bytes (pytest-xdist's temp paths were too long).
            env={**os.environ, "TMPDIR": self.tmp},
            preexec_fn=_die_with_parent,
        )
        self.frames = b""  # what the page's websocket received: the console's screen output
        self.requests: list[str] = []
        self._id = 0
        self._pending: dict[int, asyncio.Future] = {}

    def devtools_port(self) -> int:
        assert self.proc.stderr is not None
        said = []
        for raw in self.proc.stderr:
            m = re.search(rb"DevTools listening on ws://[^:]+:(\d+)/", raw)
            if m:
                return int(m.group(1))
            said.append(raw.decode(errors="replace"))
        raise AssertionError(
            f"chromium exited ({self.proc.wait()}) before it listened:\n{''.join(said[-30:])}"
        )

    async def connect(self, session) -> None:
        port = self.devtools_port()
        async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
            target = next(t for t in await r.json() if t["type"] == "page")
        self.ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.call("Network.enable")
        await self.call("Page.enable")

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                self._pending.pop(data["id"]).set_result(data)
            elif data["method"] == "Network.requestWillBeSent":
                self.requests.append(data["params"]["request"]["url"])
            elif data["method"] == "Network.webSocketFrameReceived":
                frame = data["params"]["response"]
                payload = frame["payloadData"]
                self.frames += base64.b64decode(payload) if frame["opcode"] == 2 else payload.encode()

    async def call(self, method: str, **params) -> dict:
        self._id += 1
        future = asyncio.get_running_loop().create_future()
        self._pending[self._id] = future
        await self.ws.send_json({"id": self._id, "method": method, "params": params})
        reply = await asyncio.wait_for(future, 60)
        assert "error" not in reply, reply
        return reply["result"]

    def screen_text(self) -> str:
        return ANSI.sub(b"", self.frames).decode(errors="replace")

    async def until_shown(self, text: str, after: int = 0, timeout: float = 90) -> None:
        """Until the console has sent `text` to the page (since `after` bytes of its output)."""
        deadline = time.monotonic() + timeout
        while text not in ANSI.sub(b"", self.frames[after:]).decode(errors="replace"):
            assert time.monotonic() < deadline, (
                f"{text!r} never reached the page: {self.screen_text()[-2000:]}"
            )
            await asyncio.sleep(0.2)

    async def click(self, x: int, y: int) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    async def evaluate(self, expression: str):
        return (await self.call("Runtime.evaluate", expression=expression, returnByValue=True))["result"].get(
            "value"
        )

    async def key(self, key: str, code: str, vk: int, text: str = "") -> None:
        for kind in ("keyDown", "keyUp"):
            await self.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key=key,
                code=code,
                windowsVirtualKeyCode=vk,
                **({"text": text} if kind == "keyDown" and text else {}),
            )

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        shutil.rmtree(self.tmp, ignore_errors=True)


def test_dashboard_renders_and_a_search_returns_hits_in_chromium(web, tmp_path):
    import aiohttp

    url, key, _ = web
    browser = Chromium(tmp_path / "profile")

    async def drive() -> None:
        async with aiohttp.ClientSession() as session:
            await browser.connect(session)
            await browser.call("Page.navigate", url=f"{url}/?key={key}")
            # The dashboard: the component health table with the appliance's stores.
            await browser.until_shown("duckdb")
            await browser.until_shown("embedder")
            assert await browser.evaluate("document.body.classList.contains('-first-byte')")  # xterm wrote it
            await browser.screenshot(ARTEFACTS / "console-web-dashboard.png")
            # Keys typed into the page reach the console: 3 opens Search, the query, Enter.
            await browser.evaluate("document.querySelector('.xterm-helper-textarea').focus()")
            assert "travel.md" not in browser.screen_text()  # so the hit below is the search's
            mark = len(browser.frames)
            await browser.call("Input.insertText", text="3")
            await browser.until_shown("search or ask the knowledge base", after=mark)
            # A click in the query field (rows 2-4 of the screen at this font size) gives it focus
            # whether or not the screen has focused it yet: else the letters would be key bindings.
            await browser.click(400, 74)
            await browser.call("Input.insertText", text="per diem in Europe")
            await browser.until_shown("per diem in Europe", after=mark)  # it went into the field
            await browser.key("Enter", "Enter", 13, "\r")
            await browser.until_shown("travel.md", after=mark)
            await browser.until_shown("1 hits", after=mark)
            await browser.screenshot(ARTEFACTS / "console-web-search.png")
            await browser.ws.close()

    try:
        asyncio.run(drive())
    finally:
        browser.close()
    outside = [u for u in browser.requests if not u.startswith(url)]
    assert outside == [], f"the page fetched from outside the appliance: {outside}"
    assert any(u.endswith("/static/js/textual.js") for u in browser.requests)
    print(f"screenshots: {ARTEFACTS}/console-web-dashboard.png, console-web-search.png")


def test_refuses_session_lengths_that_are_not_positive():
    for flag in ("--session-idle", "--session-max"):
        r = subprocess.run(
            [sys.executable, "-m", "appliance", "console", "--web", flag, "0", "--url", "http://127.0.0.1:1"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert r.returncode == 1 and "must be positive" in r.stderr and "Traceback" not in r.stderr
