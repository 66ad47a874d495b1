"""/schema/docs: the API documentation page works offline (everything it loads comes from the
appliance, nothing names another host) and follows the schema's key rule."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import httpx
import pytest

EXTERNAL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}""")
# Hosts a page would load code, styles or fonts from. The bundle's other URLs are strings it never
# loads (XML namespaces, RFC links in comments, JSON Schema dialect identifiers).
CDN = re.compile(r"cdn|unpkg|jsdelivr|googleapis|gstatic|cloudflare|fonts\.|bootstrapcdn", re.IGNORECASE)


class References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.csp = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [attrs[a] for a in ("src", "href") if attrs.get(a)]
        if tag == "meta" and attrs.get("http-equiv", "").lower() == "content-security-policy":
            self.csp = attrs["content"]


@pytest.fixture(scope="module")
def docs(isolation_world):
    with isolation_world.srv.client() as admin:
        page = admin.get("/schema/docs")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        refs = References()
        refs.feed(page.text)
        loaded = {url: admin.get(url) for url in refs.urls}
        schema = admin.get("/schema/openapi.json").json()
    return page.text, refs, loaded, schema


def test_the_page_and_everything_it_references_load_from_the_appliance(docs):
    html, refs, loaded, _ = docs
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    assert sorted(refs.urls) == [
        "/schema/docs/assets/swagger-ui-bundle.js",
        "/schema/docs/assets/swagger-ui.css",
    ]
    for url, response in loaded.items():
        assert response.status_code == 200, url
        assert len(response.content) > 10_000, url
    assert loaded["/schema/docs/assets/swagger-ui.css"].headers["content-type"].startswith("text/css")
    assert (
        loaded["/schema/docs/assets/swagger-ui-bundle.js"]
        .headers["content-type"]
        .startswith("text/javascript")
    )
    # The browser is told to load nothing from elsewhere, and Swagger UI not to call its validator.
    assert "default-src 'none'" in refs.csp and "http" not in refs.csp
    assert "validatorUrl: null" in html


def test_the_assets_name_no_other_host_to_load_from(docs):
    _, _, loaded, _ = docs
    css = loaded["/schema/docs/assets/swagger-ui.css"].text
    for target in re.findall(r"url\(\s*['\"]?([^'\")]*)", css):
        assert target.startswith("data:") or not EXTERNAL.match(target), target
    assert "@import" not in css and "sourceMappingURL" not in css
    js = loaded["/schema/docs/assets/swagger-ui-bundle.js"].text
    hosts = {m.group() for m in EXTERNAL.finditer(js) if CDN.search(m.group())}
    assert not hosts
    assert "sourceMappingURL" not in js


def test_the_page_carries_the_served_schema(docs):
    html, _, _, schema = docs
    inline = html.split("SwaggerUIBundle({spec: ", 1)[1].rsplit(", dom_id: '#swagger-ui'", 1)[0]
    assert json.loads(inline) == schema
    assert "/api/v1/knowledge/search" in schema["paths"]


def test_the_docs_follow_the_key_rule_of_the_schema(isolation_world):
    srv = isolation_world.srv
    for url in ("/schema/openapi.json", "/schema/docs", "/schema/docs/assets/swagger-ui.css"):
        assert httpx.get(f"{srv.url}{url}").status_code == 401, url
        assert httpx.get(f"{srv.url}{url}", headers={"Authorization": "Bearer nope"}).status_code == 401
        with srv.client(isolation_world.keys["alpha"]) as user:
            assert user.get(url).status_code == user.get("/schema/openapi.json").status_code == 200
    with srv.client() as admin:
        assert admin.get("/schema/docs/assets/index.html").status_code == 404
        assert admin.get("/schema/docs/assets/..%2F..%2Fapp.py").status_code == 404
