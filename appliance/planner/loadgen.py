"""A closed-loop load generator against the appliance's own /v1 (loopback only, bounded in time and count):
streaming chat completions, each timed to its first token, between tokens and to its end."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

from appliance.errors import InvalidInput

TOPICS = (
    "lighthouses",
    "glaciers",
    "bridges",
    "honeybees",
    "volcanoes",
    "clocks",
    "rivers",
    "libraries",
    "comets",
    "forests",
    "harbours",
    "deserts",
    "violins",
    "railways",
    "coral reefs",
    "windmills",
)


@dataclass
class Measured:
    ttft: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)  # per request: mean seconds between tokens
    tokens: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict:
        def pct(values: list[float]) -> dict | None:
            if not values:
                return None
            arr = np.asarray(values) * 1000
            return {f"p{p}": round(float(np.percentile(arr, p)), 1) for p in (50, 95, 99)} | {
                "mean": round(float(arr.mean()), 1)
            }

        return {
            "requests": len(self.e2e),
            "errors": self.errors,
            "ttft_ms": pct(self.ttft),
            "e2e_ms": pct(self.e2e),
            "itl_ms": pct(self.itl),
            "tokens_per_s_per_user": round(float(np.mean([1 / x for x in self.itl])), 2)
            if self.itl
            else None,
            "throughput_rps": round(len(self.e2e) / self.seconds, 4) if self.seconds else None,
            "mean_output_tokens": round(float(np.mean(self.tokens)), 1) if self.tokens else None,
        }


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidInput(f"the load test runs against this machine only (loopback), not {host!r}")


def prompt(i: int, words: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    filler = " ".join(TOPICS[(i + j) % len(TOPICS)] for j in range(max(0, words - 20)))
    return f"[{i}] Context: {filler}\nWrite a long, detailed essay about {topic}. Do not stop early."


async def _run(
    url: str,
    key: str,
    model: str,
    users: int,
    requests: int,
    max_seconds: float,
    prompt_words: int,
    output_tokens: int,
) -> Measured:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url.rstrip("/") + "/v1", api_key=key, timeout=600, max_retries=0)
    out = Measured()
    counter = iter(range(requests))
    deadline = time.monotonic() + max_seconds

    async def user() -> None:
        for i in counter:
            if time.monotonic() > deadline:
                return
            start = time.monotonic()
            first = None
            stamps = []
            try:
                stream = await client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": prompt(i, prompt_words)}],
                    max_tokens=output_tokens,
                    temperature=0,
                    stream=True,
                )
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        now = time.monotonic()
                        first = first or now
                        stamps.append(now)
            except Exception as exc:  # noqa: BLE001 - counted per kind, the run goes on
                name = type(exc).__name__
                out.errors[name] = out.errors.get(name, 0) + 1
                continue
            end = time.monotonic()
            if first is None:
                out.errors["no tokens"] = out.errors.get("no tokens", 0) + 1
                continue
            out.ttft.append(first - start)
            out.e2e.append(end - start)
            out.tokens.append(len(stamps))
            if len(stamps) > 1:
                out.itl.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))

    started = time.monotonic()
    await asyncio.gather(*(user() for _ in range(users)))
    out.seconds = time.monotonic() - started
    await client.close()
    return out


def run_load(
    url: str,
    key: str,
    model: str,
    users: int,
    requests: int,
    max_seconds: float = 300,
    prompt_words: int = 120,
    output_tokens: int = 32,
) -> Measured:
    """`users` clients in a closed loop (no think time) until `requests` are answered or `max_seconds` pass."""
    check_loopback(url)
    if not 1 <= users <= 256 or not 1 <= requests <= 10_000:
        raise InvalidInput("users must be 1..256 and requests 1..10000")
    return asyncio.run(_run(url, key, model, users, requests, max_seconds, prompt_words, output_tokens))
