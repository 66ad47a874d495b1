"""Can one document stall the server? Ingest hostile documents while /healthz is polled every 50 ms.

Starts a throwaway server (or uses --url/--key), uploads each document below one at a time, and
prints per document how long the upload took to be accepted (the POST), how long its ingest took,
its outcome (with the failure reason), and /healthz latency while it was in flight; then /healthz
p50/p99/max over the whole run. Target: /healthz p99 under 100 ms. The machine's load average is
printed at the start and the end, since a shared machine moves every number.

    python scripts/bench/stall.py [--only dots-1m newlines-65k ...] [--url URL --key KEY]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.bench._server import bench_server, percentile  # noqa: E402

KB, MB = 1024, 1 << 20
COLLECTION = "stall"


def page_bomb_pdf(pages: int) -> bytes:
    """A valid PDF whose page tree lists one page object `pages` times (~6 bytes per page)."""
    stream = b"BT /F1 12 Tf 72 740 Td (The same page again.) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join([b"5 0 R"] * pages), pages),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 3 0 R >> >> /Contents 4 0 R >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def documents() -> dict[str, tuple[str, bytes]]:
    """name -> (filename, content)."""
    return {
        "dots-100k": ("dots.txt", b"." * (100 * KB)),
        "dots-1m": ("dots.txt", b"." * MB),
        "newlines-65k": ("newlines", b"\n" * (65 * KB) + b"end"),
        "newlines-1m": ("newlines", b"\n" * MB + b"end"),
        "spaces-tabs-1m": ("blanks", b"x" + b" \t" * (MB // 2) + b"y"),
        "link-openers-1m": ("links", b"](" * (MB // 2)),
        "html-comments-4k": ("page", b"<!---->" * 580 + b"x"),
        "a=a=-1m": ("assign.txt", b"a=" * (MB // 2)),
        "one-line-10m": ("one-line.txt", b"lorem ipsum dolor sit amet " * (10 * MB // 27)),
        "one-token-10m": ("blob.txt", b"Q" * (10 * MB)),
        "pdf-200k-pages": ("bomb.pdf", page_bomb_pdf(200_000)),
        "ordinary": ("notes.md", b"# Notes\n\nAn ordinary document. It has two sentences.\n"),
    }


class HealthPoller(threading.Thread):
    """GET /healthz every 50 ms; records (start time, latency) of each answer."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=base_url, timeout=600)
        self.samples: list[tuple[float, float]] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                ok = self.client.get("/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            self.samples.append((start, time.monotonic() - start))
            self.errors += not ok
            self.stop.wait(max(0.0, 0.05 - (time.monotonic() - start)))

    def between(self, t0: float, t1: float) -> list[float]:
        return [lat for at, lat in self.samples if t0 <= at <= t1]


def ms(values: list[float], p: float) -> str:
    return f"{percentile(values, p) * 1000:.0f}" if values else "-"


def ingest(client: httpx.Client, filename: str, content: bytes) -> tuple[float, float, str]:
    """(accept seconds, ingest seconds, outcome)."""
    t0 = time.monotonic()
    r = client.post(
        "/api/v1/documents",
        data={"collection": COLLECTION},
        files={"file": (filename, content)},
    )
    accepted = time.monotonic() - t0
    if r.status_code != 202:
        return accepted, 0.0, f"refused {r.status_code}: {r.json().get('detail', r.text)[:100]}"
    job_id = r.json()["job_id"]
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}", params={"items": "true"}).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    took = time.monotonic() - t0 - accepted
    item = (job.get("items") or [{}])[0]
    if item.get("state") == "failed":
        return accepted, took, f"failed: {(item.get('error') or '')[:100]}"
    return accepted, took, f"{item.get('state', job['state'])}, {item.get('chunks') or 0} chunks"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="names of documents to ingest (default: all)")
    ap.add_argument("--url")
    ap.add_argument("--key")
    args = ap.parse_args()
    docs = documents()
    names = args.only or list(docs)
    unknown = set(names) - set(docs)
    if unknown:
        raise SystemExit(f"unknown documents {sorted(unknown)}; choose from {list(docs)}")

    print(
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs",
        flush=True,
    )
    # The chat model is not needed to ingest; loading it would only take CPU from the measurement.
    with bench_server(args.url, args.key, env={"APPLIANCE_LLM__LOAD_AT_START": "false"}) as client:
        client.post("/api/v1/collections", json={"name": COLLECTION})
        poller = HealthPoller(str(client.base_url))
        poller.start()
        time.sleep(1.0)  # a baseline before the first upload
        print(
            f"\n{'document':18} {'bytes':>10} {'accept s':>9} {'ingest s':>9} "
            f"{'healthz p50/p99/max ms':>23} {'max in POST':>11}  outcome"
        )
        t_start = time.monotonic()
        for name in names:
            filename, content = docs[name]
            t0 = time.monotonic()
            accepted, took, outcome = ingest(client, filename, content)
            during = poller.between(t0, time.monotonic())
            # Polls in flight at any moment of the POST: does accepting the upload stall the server?
            in_post = [lat for at, lat in poller.samples if at <= t0 + accepted and at + lat >= t0]
            health = f"{ms(during, 50)}/{ms(during, 99)}/{ms(during, 100)}"
            print(
                f"{name:18} {len(content):>10,} {accepted:>9.2f} {took:>9.2f} {health:>23} "
                f"{ms(in_post, 100):>11}  {outcome}",
                flush=True,
            )
        poller.stop.set()
        poller.join()
        everything = poller.between(t_start, time.monotonic())

    print(
        f"\n/healthz over the whole run: {len(everything)} polls, p50 {ms(everything, 50)} ms, "
        f"p99 {ms(everything, 99)} ms, max {ms(everything, 100)} ms, errors {poller.errors}"
        f" (target: p99 < 100 ms)"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
