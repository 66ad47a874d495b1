"""Ingest throughput on real documents, as a ratio to the raw embedding throughput of the same chunks.

Runs the real pipeline in-process (jobs, parsing, chunking, embedding, DuckDB, both indexes) on
Debian's Python HTML docs and R PDF manuals, then embeds the very same chunk texts alone. The
ratio says what the pipeline around the model costs.

    python scripts/bench/ingest.py [--html N] [--pdf N] [paths...]
    (apt-get install python3.11-doc r-doc-pdf provides the default corpora)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from appliance.config import load_settings  # noqa: E402
from appliance.core import Appliance  # noqa: E402
from appliance.document import Chunk, Location  # noqa: E402
from appliance.ingest.intake import NewDocument  # noqa: E402
from appliance.ingest.parsers import parse  # noqa: E402
from appliance.ingest.pipeline import embedding_text  # noqa: E402

HTML_ROOT = Path("/usr/share/doc/python3.11-doc/html")
PDF_ROOT = Path("/usr/share/doc/r-doc-pdf")


def pick(args: argparse.Namespace) -> list[Path]:
    if args.paths:
        return [
            p
            for raw in args.paths
            for p in ([Path(raw)] if Path(raw).is_file() else sorted(Path(raw).rglob("*")))
            if p.is_file()
        ]
    html = (
        sorted(p for p in (HTML_ROOT / "library").glob("*.html"))[: args.html] if HTML_ROOT.exists() else []
    )
    # Debian keeps the manuals under manual/ (as symlinks).
    pdfs = (
        sorted(PDF_ROOT.rglob("*.pdf"), key=lambda p: p.stat().st_size)[: args.pdf]
        if PDF_ROOT.exists()
        else []
    )
    if not html and not pdfs:
        raise SystemExit("no documents: apt-get install python3.11-doc r-doc-pdf, or pass paths")
    return html + pdfs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--html", type=int, default=40)
    ap.add_argument("--pdf", type=int, default=3)
    args = ap.parse_args()
    files = pick(args)
    total_bytes = sum(p.stat().st_size for p in files)

    with tempfile.TemporaryDirectory(prefix="appliance-ingest-bench-") as tmp:
        app = Appliance(load_settings(overrides={"data_dir": tmp}, environ={}))
        app.start()
        t = time.perf_counter()
        app.embedder.warm()
        load_s = time.perf_counter() - t
        app.catalog.ensure_collection("bench")

        # parsing alone, to show where the non-model time goes
        t = time.perf_counter()
        parsed = [parse(p.read_bytes(), p.name) for p in files]
        parse_s = time.perf_counter() - t
        t = time.perf_counter()
        chunked = [app.chunker.chunk(doc) for doc in parsed]
        chunk_s = time.perf_counter() - t

        docs = [
            NewDocument(source_id=str(p), content=p.read_bytes(), filename=p.name, source_kind="file")
            for p in files
        ]
        t = time.perf_counter()
        job_id, _ = app.knowledge.submit(app.access.system_scope(), "bench", docs)
        job = app.jobs.wait(job_id, timeout=7200)
        app.sync.flush()
        pipeline_s = time.perf_counter() - t
        n_chunks = app.catalog.chunk_count()

        texts = [
            embedding_text(row[0], _chunk(row))
            for row in app.db.fetchall(
                """SELECT d.title, k.text, k.heading_path FROM chunks k JOIN documents d ON d.id = k.document_id
                   ORDER BY d.id, k.ordinal"""
            )
        ]
        t = time.perf_counter()
        app.embedder.embed_documents(texts)
        embed_s = time.perf_counter() - t
        app.close()

    print(
        f"documents: {len(files)} ({sum(p.suffix == '.pdf' for p in files)} PDF), {total_bytes / 1e6:.1f} MB, "
        f"chunks: {n_chunks}, failed: {job.progress.failed}"
    )
    print(f"model load: {load_s:.1f} s (not counted)")
    print(
        f"parse alone: {parse_s:.2f} s  ({len(files) / parse_s:.1f} docs/s, {total_bytes / 1e6 / parse_s:.1f} MB/s)"
    )
    print(f"chunk alone: {chunk_s:.2f} s  ({sum(map(len, chunked)) / chunk_s:.0f} chunks/s)")
    print(
        f"pipeline (API-less job: parse+chunk+embed+DuckDB+indexes): {pipeline_s:.1f} s  "
        f"{len(files) / pipeline_s:.2f} docs/s  {n_chunks / pipeline_s:.1f} chunks/s"
    )
    print(
        f"raw embedding of the same {len(texts)} chunk texts: {embed_s:.1f} s  {len(texts) / embed_s:.1f} chunks/s"
    )
    print(
        f"pipeline throughput / raw embedding throughput: {embed_s / pipeline_s:.3f}  "
        f"(overhead {100 * (pipeline_s - embed_s) / embed_s:.1f}%)"
    )


def _chunk(row) -> Chunk:
    return Chunk(0, row[1], Location(heading_path=tuple(row[2] or ())), 0)


if __name__ == "__main__":
    main()
