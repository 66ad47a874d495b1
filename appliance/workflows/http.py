"""`http` tools: one request to a fixed host that settings network.allow admits (or loopback), its
path and query filled from the validated input, its JSON answer the tool's output."""

from __future__ import annotations

import json
import re
import string
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from appliance.workflows.builtins import ToolFailure

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BODYLESS = ("GET", "DELETE")
MAX_RESPONSE_BYTES = 1024 * 1024
# Statuses that say "try again" although they are 4xx: a timeout of the request, and too many.
RETRYABLE_4XX = (408, 429)


class RequestRefused(ValueError):
    """An http tool's spec or call that would leave what the admin allowed."""


def placeholders(template: str) -> list[str]:
    """The {name} fields of a URL template."""
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def check_template(template: str) -> str:
    """The template's host, once the scheme and host are literal (only the path and query may be
    filled from input, so a call can never choose where it goes); RequestRefused otherwise."""
    try:
        fields = placeholders(template)
    except ValueError as exc:
        raise RequestRefused(f"url: {exc}") from None
    for field in fields:
        if not field.isidentifier():
            raise RequestRefused(f"url: {{{field}}} must name an input field")
    blank = template.format(**{f: "x" for f in fields}) if fields else template
    parts = urlsplit(blank)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RequestRefused("url: an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise RequestRefused("url: no credentials in the URL")
    scheme, _, rest = template.partition("//")
    head = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "{" in head or "{" in scheme:
        raise RequestRefused(
            "url: the scheme, host and port are fixed; only the path and query take {fields}"
        )
    return parts.hostname


def _text(value: Any) -> str:
    """An argument as it goes into a URL: a string as it is, anything else as JSON (true, 3, [1])."""
    return value if isinstance(value, str) else json.dumps(value)


def build(spec: dict, args: dict) -> tuple[str, str, dict[str, str], bytes | None]:
    """(method, url, headers, body) of one call: path fields percent-encoded into the URL; the
    other arguments the JSON body, or the query string of a GET or DELETE."""
    http = spec["http"]
    method = http.get("method", "POST").upper()
    template = http["url"]
    fields = placeholders(template)
    url = template.format(**{f: quote(_text(args.get(f, "")), safe="") for f in fields})
    rest = {k: v for k, v in args.items() if k not in fields}
    headers = {
        "Accept": "application/json",
        **{str(k): str(v) for k, v in (http.get("headers") or {}).items()},
    }
    body = None
    if method in BODYLESS:
        if rest:
            pairs = {k: _text(v) for k, v in rest.items()}
            url += ("&" if urlsplit(url).query else "?") + urlencode(pairs)
    else:
        body = json.dumps(rest, ensure_ascii=False).encode()
        headers["Content-Type"] = "application/json"
    return method, url, headers, body


def call(spec: dict, args: dict, invocation_id: str, timeout: float) -> Any:
    """Make the request; its JSON answer, or ToolFailure: retryable for timeouts, connection errors,
    5xx, 408 and 429; not for other statuses, an answer that is not JSON, or a refused address."""
    import httpx

    method, url, headers, body = build(spec, args)
    idempotency = spec["http"].get("idempotency_header")
    if idempotency:
        headers[idempotency] = invocation_id
    try:
        # No proxies from the environment and no redirects: the request goes to the checked host only.
        with (
            httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client,
            client.stream(method, url, headers=headers, content=body) as response,
        ):
            data = bytearray()
            for piece in response.iter_bytes():
                data += piece
                if len(data) > MAX_RESPONSE_BYTES:
                    raise ToolFailure(f"the response is over {MAX_RESPONSE_BYTES} bytes", retryable=False)
            status = response.status_code
    except httpx.TimeoutException:
        raise ToolFailure(f"{method} {_shown(url)}: no answer in {timeout:g} s", kind="timeout") from None
    except httpx.HTTPError as exc:
        raise ToolFailure(f"{method} {_shown(url)}: {type(exc).__name__}: {exc}") from None
    except PermissionError as exc:  # the process's network guard refused the connection
        raise ToolFailure(f"{method} {_shown(url)}: {exc}", retryable=False) from None
    if not 200 <= status < 300:
        detail = data[:200].decode(errors="replace").strip()
        retryable = status >= 500 or status in RETRYABLE_4XX
        raise ToolFailure(f"{method} {_shown(url)} answered {status}: {detail}", retryable=retryable)
    if not data.strip():
        return {}
    try:
        return json.loads(data)
    except ValueError:
        raise ToolFailure(f"{method} {_shown(url)}: the answer is not JSON", retryable=False) from None


def _shown(url: str) -> str:
    """The URL without its query (where an argument's value may be private)."""
    return url.split("?", 1)[0]
