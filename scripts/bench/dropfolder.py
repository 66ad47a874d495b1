"""Drop folder: time from a file landing to being searchable (p50/p95), and burst throughput.

    python scripts/bench/dropfolder.py [--files 20] [--burst 300] [--settle 2.0]

Latency: small Markdown files dropped one at a time, each with a unique word; the clock runs from
the moment the file is closed until a keyword search returns it. The settle time (a file must
hold still that long before it is taken) is part of that latency by design, so it is printed.
Burst: the smallest N pages of Debian's Python HTML docs (python3.11-doc) copied at once; the clock
runs until every one is searchable.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import bench_server, percentile  # noqa: E402

PYDOC = Path("/usr/share/doc/python3.11/html/library")


def searchable(client, word: str, collection: str) -> bool:
    response = client.post(
        "/api/v1/knowledge/search",
        json={"query": word, "collections": [collection], "mode": "keyword", "top_k": 1},
    )
    return response.status_code == 200 and bool(response.json()["hits"])


def latency(client, inbox: Path, files: int) -> list[float]:
    folder = inbox / "latency"
    folder.mkdir(parents=True, exist_ok=True)
    times = []
    for i in range(files):
        word = "zq" + uuid.uuid4().hex[:10]
        path = folder / f"note-{i}.md"
        path.write_text(f"# Note {i}\n\nThe code word for this note is {word}. It is a short file.\n")
        landed = time.perf_counter()
        while not searchable(client, word, "latency"):
            time.sleep(0.02)
        times.append(time.perf_counter() - landed)
    return times


def burst(client, inbox: Path, count: int) -> tuple[float, int, int]:
    pages = sorted(PYDOC.glob("*.html"), key=lambda p: p.stat().st_size)[:count]
    if len(pages) < count:
        raise SystemExit(f"only {len(pages)} pages under {PYDOC}: install python3.11-doc")
    staging = inbox.parent / "staging"
    staging.mkdir()
    for page in pages:
        shutil.copy(page, staging / page.name)
    started = time.perf_counter()
    # One rename: the whole burst lands at once, as a copy tool finishing a folder would.
    (staging).rename(inbox / "burst")
    while True:
        listed = client.get("/api/v1/documents", params={"collection": "burst", "limit": 1})
        total = listed.json()["total"] if listed.status_code == 200 else 0
        jobs = client.get("/api/v1/jobs", params={"limit": 50}).json()
        busy = any(j["state"] in ("queued", "running") for j in jobs if j["collection"] == "burst")
        if total >= len(pages) and not busy:
            break
        time.sleep(0.25)
    elapsed = time.perf_counter() - started
    chunks = next(c["chunks"] for c in client.get("/api/v1/collections").json() if c["name"] == "burst")
    return elapsed, len(pages), chunks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument("--settle", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dropfolder-bench-") as tmp:
        inbox = Path(tmp) / "inbox"
        env = {
            "APPLIANCE_DROPFOLDER__PATH": str(inbox),
            "APPLIANCE_DROPFOLDER__SETTLE_SECONDS": str(args.settle),
            "APPLIANCE_LLM__LOAD_AT_START": "false",
        }
        with bench_server(env=env) as client:
            times = latency(client, inbox, args.files)
            print(f"settle time            {args.settle:.2f} s")
            print(
                f"landing -> searchable  p50 {percentile(times, 50):.2f} s  p95 {percentile(times, 95):.2f} s"
                f"  (n={len(times)}; minus settle: p50 {percentile(times, 50) - args.settle:.2f} s)"
            )
            if args.burst:
                elapsed, docs, chunks = burst(client, inbox, args.burst)
                print(
                    f"burst                  {docs} documents, {chunks} chunks in {elapsed:.1f} s: "
                    f"{docs / elapsed:.1f} documents/s, {chunks / elapsed:.1f} chunks/s"
                )


if __name__ == "__main__":
    main()
