"""scripts/bench/fusion.py on a tiny set, so the harness does not rot: it builds its candidate cache
once, reuses it, and prints every mode's held-out scores with intervals."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench"

DOCS = {
    "tar": "Archive files into a tarball, optionally compressed with gzip or xz.",
    "grep": "Search files for lines that match a regular expression pattern.",
    "ssh": "Log in to a remote machine over an encrypted connection.",
    "cron": "Run commands on a schedule: every minute, hour or day.",
    "df": "Report how much disk space each mounted file system has free.",
    "ping": "Send ICMP echo requests to check whether a host is reachable.",
}
QUERIES = {
    "q1": ("bundle several files into one compressed archive", "tar"),
    "q2": ("find text matching a pattern", "grep"),
    "q3": ("secure remote shell login", "ssh"),
    "q4": ("schedule a job to run nightly", "cron"),
    "q5": ("how full is my disk", "df"),
    "q6": ("is the server reachable on the network", "ping"),
    "q7": ("regular expression search in files", "grep"),
    "q8": ("compress a directory with xz", "tar"),
}


def _module(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fusion_bench_on_a_tiny_set(tmp_path, monkeypatch, capsys):
    dataset = tmp_path / "tiny"
    (dataset / "qrels").mkdir(parents=True)
    (dataset / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": d, "text": t}) + "\n" for d, t in DOCS.items())
    )
    (dataset / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in QUERIES.items())
    )
    (dataset / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, (_, d) in QUERIES.items())
    )
    bench = _module("fusion")
    assert {bench.split_of(q) for q in QUERIES} == {"tune", "heldout"}
    cache = tmp_path / "cache"
    argv = ["fusion.py", str(dataset), "--cache", str(cache), "--resamples", "50", "--json"]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    report = json.loads(capsys.readouterr().out)
    vectors = cache / "tiny" / "vectors.npy"
    assert vectors.exists() and (cache / "tiny" / "candidates-100.json").exists()

    result = report["sets"]["tiny"]
    heldout = sum(bench.split_of(q) == "heldout" for q in QUERIES)
    assert result["heldout_queries"] == heldout
    labels = list(result["rows"])
    assert labels[:3] == ["keyword", "semantic", "hybrid old (weighted sem=0.7)"]
    assert any(label.startswith("hybrid new (") for label in labels)
    for row in result["rows"].values():
        for metric in ("ndcg@10", "recall@100"):
            low, high = row[metric]["ci"]
            assert 0.0 <= low <= row[metric]["mean"] <= high <= 1.0
    assert set(result["new_minus"]) == {"keyword", "semantic", "hybrid old (weighted sem=0.7)"}
    assert report["chosen"] in {t["config"] for t in report["tuning"]}

    # A rerun reads the cached candidates: nothing is embedded again.
    stamp = vectors.stat().st_mtime_ns
    bench.main()
    assert json.loads(capsys.readouterr().out)["chosen"] == report["chosen"]
    assert vectors.stat().st_mtime_ns == stamp
