"""Text extraction speed of pypdfium2 (what the PDF parser uses) against pypdf on real PDFs.

Usage: python scripts/bench/pdf_parsers.py [GLOB_OR_FILE ...]
Default: every PDF under /usr/share/doc/r-doc-pdf (Debian package r-doc-pdf).
Prints per-file and total pages/s and MB/s for each library and the speed ratio.
"""

from __future__ import annotations

import glob
import io
import os
import sys
import time

DEFAULT_GLOB = "/usr/share/doc/r-doc-pdf/**/*.pdf"  # the manuals sit in manual/ on Debian


def pdfium_extract(data: bytes) -> tuple[int, int]:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    chars = 0
    try:
        for i in range(len(pdf)):
            page = pdf[i]
            textpage = page.get_textpage()
            chars += len(textpage.get_text_range())
            textpage.close()
            page.close()
        return len(pdf), chars
    finally:
        pdf.close()


def pypdf_extract(data: bytes) -> tuple[int, int]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    chars = sum(len(page.extract_text() or "") for page in reader.pages)
    return len(reader.pages), chars


LIBRARIES = {"pypdfium2": pdfium_extract, "pypdf": pypdf_extract}


def main(argv: list[str]) -> int:
    patterns = argv or [DEFAULT_GLOB]
    files = sorted(
        {p for pattern in patterns for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)}
    )
    if not files:
        print(f"no PDF matched {patterns}; install r-doc-pdf or pass paths/globs", file=sys.stderr)
        return 1
    for extract in LIBRARIES.values():  # import and warm up outside the timings
        extract(open(files[0], "rb").read())
    totals = {name: [0, 0.0, 0] for name in LIBRARIES}  # pages, seconds, chars
    total_mb = 0.0
    print(
        f"{'file':<22}{'MB':>7}{'pages':>7}  "
        + "".join(f"{n + ' p/s':>15}{n + ' chars':>17}" for n in LIBRARIES)
    )
    for path in files:
        data = open(path, "rb").read()
        mb = len(data) / 1e6
        total_mb += mb
        row = f"{os.path.basename(path):<22}{mb:>7.2f}"
        cells, pages = "", 0
        for name, extract in LIBRARIES.items():
            start = time.perf_counter()
            try:
                pages, chars = extract(data)
            except Exception as e:  # a library failing on a real file is itself a result
                cells += f"{'failed: ' + type(e).__name__:>32}"
                continue
            seconds = time.perf_counter() - start
            totals[name][0] += pages
            totals[name][1] += seconds
            totals[name][2] += chars
            cells += f"{pages / seconds:>15.1f}{chars:>17,}"
        print(f"{row}{pages:>7}  {cells}")
    print()
    rates = {}
    for name, (pages, seconds, chars) in totals.items():
        rates[name] = pages / seconds if seconds else 0.0
        print(
            f"{name:<10} {pages:>6} pages in {seconds:7.2f} s: {rates[name]:8.1f} pages/s, "
            f"{total_mb / seconds if seconds else 0:6.2f} MB/s, {chars:,} chars"
        )
    if rates.get("pypdf"):
        ratio = rates["pypdfium2"] / rates["pypdf"]
        verdict = "pypdfium2 is faster" if ratio > 1 else "pypdf is faster: revisit the choice"
        print(f"ratio pypdfium2/pypdf: {ratio:.1f}x ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
