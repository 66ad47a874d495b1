"""Build a known-item retrieval evaluation set (BEIR layout) from the local man pages.

    python scripts/bench/make_manpage_evalset.py [--out DIR] [--docs 800] [--queries 200]
                                                 [--seed 13] [--max-chars 4000]

Writes DIR/corpus.jsonl ({"_id", "title", "text"}), DIR/queries.jsonl ({"_id", "text"}) and
DIR/qrels/test.tsv ("query-id<TAB>corpus-id<TAB>score"), readable by scripts/bench/retrieval.py.

Design
------
* Source: the gzip'd troff pages under /usr/share/man/man1 and man8 (about 18k on this machine).
* One document per page. Its title is the command name (the file name without the section
  suffix), as a user would see it; its text is the page rendered with
  `groff -k -t -mandoc -Tutf8` (the same formatter `man` uses, without pager or hyphenation),
  with the header and footer lines dropped, paragraphs re-joined onto single lines, the NAME
  section removed, and the result cut at a word boundary to its first --max-chars characters.
* One query per sampled page: the one-line description from its NAME section
  ("ls \\- list directory contents" gives "list directory contents"). The page it came from is
  the only judged document (score 1). Because NAME is removed from the indexed text, the query
  is never a verbatim copy of what was indexed, although the DESCRIPTION section often
  paraphrases it closely.
* Pages dropped before sampling: symlinks and `.so` redirects (aliases of another page), pages
  without a parseable NAME line, descriptions under 3 words, descriptions that contain one of
  the page's own command names as a word (the query would name its answer), and descriptions
  shared by several pages (the known item would not be unique). After rendering, pages whose
  text (without NAME) is under 300 characters are dropped too.
* Sampling is deterministic for a given --seed and set of installed pages: the eligible pages
  are sorted by path, shuffled with random.Random(seed), and the first --docs that render to
  enough text form the corpus; --queries of those are drawn with the same generator. Pages
  that are in the corpus but not queried are distractors.

Known biases
------------
* Known-item, single judgment: a query has exactly one relevant page, so nDCG@10 here is a
  rank-discounted hit rate (MRR-like), and an equally good near-duplicate page (`dir` for
  "list directory contents") counts as a miss. Exact duplicate descriptions are removed, but
  near-duplicates (families such as openssl-*, systemd-*, llvm-*, git-* and perl tool pages)
  are not, which makes the set harder than a user would find it and adds label noise.
* Descriptions are terse, author-written summaries with the vocabulary of the page itself
  (help2man pages repeat them in DESCRIPTION), which favours lexical matching; they are not
  real user questions.
* The corpus is whatever Debian packages happen to be installed here (heavy on developer
  tools), and changes when packages are installed or removed; record the summary line with
  any result.
* Truncation to the first --max-chars characters keeps the synopsis and description and drops
  the option lists of long pages; the title (command name) never occurs in the query, so it
  only helps when the description mentions a related command.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

MAN_DIRS = (Path("/usr/share/man/man1"), Path("/usr/share/man/man8"))
MIN_DESC_WORDS = 3
MIN_TEXT_CHARS = 300
GROFF = ["groff", "-k", "-t", "-mandoc", "-Tutf8", "-P-cbou", "-rLL=200n", "-rHY=0", "-rcR=1"]

# Raw troff escapes, only for reading the NAME section of every page cheaply.
_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\s[+-]?\d"), ""),  # size changes
    (re.compile(r"\\\*(\[[^\]]*\]|\(..|.)"), '"'),  # strings (mostly quotes)
    (re.compile(r"\\\((em|en)"), " - "),
    (re.compile(r"\\\(aq"), "'"),
    (re.compile(r"\\\((lq|rq|dq)"), '"'),
    (re.compile(r"\\\[[^\]]*\]|\\\(.."), ""),  # other named glyphs
    (re.compile(r"\\-"), "-"),
    (re.compile(r"\\[&%c|^:]"), ""),
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\ "), " "),
]
_SECTION = re.compile(r'^\.(?:SH|Sh)\s+"?([^"\n]*)"?\s*$', re.M)
_DASH_SPLIT = re.compile(r"\s+(?:-+|\u2014|\u2013)\s+")
_HEADING = re.compile(r"^[A-Z][A-Z0-9 ,/&()'-]*$")


@dataclass
class Page:
    path: Path
    title: str
    names: list[str]
    description: str


def command_name(path: Path) -> str:
    stem = path.name.removesuffix(".gz")
    return stem.rsplit(".", 1)[0] if "." in stem else stem


def clean_troff(text: str) -> str:
    for pattern, repl in _ESCAPES:
        text = pattern.sub(repl, text)
    return text


def parse_name(raw: str) -> tuple[list[str], str] | None:
    """(names, description) from a page's NAME section, man or mdoc, or None."""
    heads = list(_SECTION.finditer(raw))
    for i, head in enumerate(heads):
        if head.group(1).strip().upper() != "NAME":
            continue
        end = heads[i + 1].start() if i + 1 < len(heads) else len(raw)
        body = raw[head.end() : end]
        names, desc, words = [], [], []
        for line in body.splitlines():
            line = line.strip()
            if not line or line.startswith(('.\\"', "'\\\"")):
                continue
            if line.startswith(".Nm"):
                names += [n.strip(",") for n in line[3:].split() if n != ","]
            elif line.startswith(".Nd"):
                desc.append(line[3:])
            elif line.startswith("."):
                macro, _, rest = line.partition(" ")
                if macro in (".B", ".I", ".BR", ".IR", ".RB", ".BI"):
                    words.append(rest.replace('"', ""))
            else:
                words.append(line)
        if desc:
            return names, " ".join(clean_troff(" ".join(desc)).split())
        joined = " ".join(clean_troff(" ".join(words)).split())
        parts = _DASH_SPLIT.split(joined, maxsplit=1)
        if len(parts) != 2:
            return None
        return [n.strip() for n in parts[0].split(",") if n.strip()], parts[1].strip()
    return None


def family(title: str) -> str:
    """gcloud_compute_instances_create -> gcloud, git-commit -> git."""
    return re.split(r"[-_. ]", title, maxsplit=1)[0].lower()


def norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def names_itself(description: str, names: list[str]) -> bool:
    d = f" {norm(description)} "
    return any(f" {norm(n)} " in d for n in names if norm(n))


def good_description(description: str, names: list[str]) -> bool:
    return len(description.split()) >= MIN_DESC_WORDS and not names_itself(description, names)


def scan(dirs: tuple[Path, ...]) -> tuple[list[Page], Counter]:
    """Every page with a usable NAME line (aliases skipped), and a count of each description."""
    pages, counts = [], Counter()
    for d in dirs:
        for path in sorted(d.glob("*.gz")):
            if path.is_symlink():
                continue
            try:
                raw = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
            except (OSError, EOFError):
                continue
            body = [ln for ln in raw.splitlines() if ln.strip() and not ln.startswith(('.\\"', "'\\\""))]
            if len(body) <= 2 and any(ln.startswith(".so ") for ln in body):
                continue
            parsed = parse_name(raw)
            if not parsed or not parsed[1]:
                continue
            names, desc = parsed
            counts[norm(desc)] += 1
            pages.append(Page(path, command_name(path), names, desc))
    return pages, counts


def render(path: Path) -> str:
    """Plain text of a page: groff output without header/footer, one line per paragraph."""
    raw = gzip.decompress(path.read_bytes())
    out = subprocess.run(
        GROFF, input=raw, capture_output=True, timeout=60, env={**os.environ, "LC_ALL": "C.UTF-8"}
    ).stdout.decode("utf-8", "replace")
    lines = out.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    lines = lines[:-1]  # footer
    start = next((i for i, ln in enumerate(lines) if ln[:1].isalpha() and _HEADING.match(ln.strip())), 0)
    lines = lines[start:]  # header
    paragraphs, current = [], []
    for line in lines:
        if not line.strip():
            if current:
                paragraphs.append(" ".join(current))
                current = []
        elif not line[0].isspace() and _HEADING.match(line.strip()):
            if current:
                paragraphs.append(" ".join(current))
                current = []
            paragraphs.append("\n" + line.strip())
        else:
            current.append(" ".join(line.split()))
    if current:
        paragraphs.append(" ".join(current))
    return "\n".join(paragraphs).strip()


def split_name(text: str) -> tuple[str, str]:
    """(description from the rendered NAME section, text without it)."""
    m = re.match(r"NAME\n(.*?)(?=\n\n[A-Z]|\Z)", text, re.S)
    if not m:
        return "", text
    parts = _DASH_SPLIT.split(" ".join(m.group(1).split()), maxsplit=1)
    return (parts[1].strip() if len(parts) == 2 else ""), text[m.end() :].strip()


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    return cut[:space] if space > limit // 2 else cut


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/manpage-evalset"))
    ap.add_argument("--docs", type=int, default=800)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--max-chars", type=int, default=4000)
    ap.add_argument(
        "--max-family-share",
        type=float,
        default=0.2,
        help="at most this share of the docs from one command family (gcloud is ~90%% of man1)",
    )
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    if args.queries > args.docs:
        sys.exit("--queries cannot exceed --docs")
    started = time.perf_counter()

    pages, counts = scan(MAN_DIRS)
    eligible = [
        p
        for p in pages
        if counts[norm(p.description)] == 1 and good_description(p.description, [*p.names, p.title])
    ]
    rng = random.Random(args.seed)
    rng.shuffle(eligible)

    docs: list[tuple[Page, str, str]] = []  # page, query text, document text
    seen_desc: set[str] = set()
    seen_title: set[str] = set()
    families: Counter = Counter()
    family_cap = max(1, int(args.docs * args.max_family_share))
    truncated = 0
    pos = rendered_n = 0
    with ThreadPoolExecutor(args.workers) as pool:
        while len(docs) < args.docs and pos < len(eligible):
            batch, want = [], max(64, (args.docs - len(docs)) * 5 // 4)
            while len(batch) < want and pos < len(eligible):
                if families[family(eligible[pos].title)] < family_cap:  # cap reached: skip unrendered
                    batch.append(eligible[pos])
                pos += 1
            rendered_n += len(batch)
            for page, rendered in zip(batch, pool.map(lambda p: render(p.path), batch), strict=True):
                desc, text = split_name(rendered)
                desc = desc or page.description
                key = norm(desc)
                if (
                    len(text) < MIN_TEXT_CHARS
                    or key in seen_desc
                    or page.title in seen_title
                    or families[family(page.title)] >= family_cap
                    or not good_description(desc, [*page.names, page.title])
                ):
                    continue
                families[family(page.title)] += 1
                truncated += len(text) > args.max_chars
                seen_desc.add(key)
                seen_title.add(page.title)
                docs.append((page, desc, truncate(text, args.max_chars)))
                if len(docs) == args.docs:
                    break
    if len(docs) < args.queries:
        sys.exit(f"only {len(docs)} usable pages")
    queried = sorted(rng.sample(range(len(docs)), args.queries))

    out = args.out
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w") as f:
        for i, (page, _, text) in enumerate(docs):
            f.write(
                json.dumps(
                    {"_id": f"d{i}", "title": page.title, "text": text, "metadata": {"path": str(page.path)}}
                )
                + "\n"
            )
    with (out / "queries.jsonl").open("w") as f, (out / "qrels" / "test.tsv").open("w") as q:
        q.write("query-id\tcorpus-id\tscore\n")
        for n, i in enumerate(queried):
            f.write(json.dumps({"_id": f"q{n}", "text": docs[i][1]}) + "\n")
            q.write(f"q{n}\td{i}\t1\n")

    lengths = [len(t) for _, _, t in docs]
    qwords = [len(docs[i][1].split()) for i in queried]
    print(
        f"scanned {len(pages)} pages with a NAME line, {len(eligible)} eligible; "
        f"rendered {rendered_n}, kept {len(docs)}"
    )
    print(
        f"docs: {len(docs)}  queries: {len(queried)}  mean doc length: {sum(lengths) / len(lengths):.0f} chars "
        f"(truncated at {args.max_chars}: {truncated})  "
        f"mean query length: {sum(qwords) / len(qwords):.1f} words"
    )
    print("largest families:", ", ".join(f"{k} {v}" for k, v in families.most_common(6)))
    print(f"seed: {args.seed}  out: {out}  {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
