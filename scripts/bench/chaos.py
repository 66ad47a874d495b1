"""Chaos: kill -9 at a random moment during ingest work, restart, and count lost documents.

    python scripts/bench/chaos.py [--rounds 50] [--seed 7] [--workloads batch,git,dropfolder,saves] [--json]

Each workload runs its own server on its own data dir. A round: (re)start the server on that data
dir, wait until it is ready and its jobs have settled, check, then start the workload and SIGKILL
the server after a random (seeded) delay. A last restart and check close the run.

"Acknowledged", per workload (what the appliance owes after any crash):
- batch: every document of a `POST /api/v1/documents/batch` answered 202 (batches of 40).
- git: every file at the commit of a `POST /api/v1/sources/<name>/sync` answered 202 (a local
  repository of a few hundred small Markdown files; each round commits 30 more before syncing).
- dropfolder: every file written and closed under <data dir>/inbox/<collection>/ before the kill
  (the writer is this process, so no file is half-written; the drop folder's own settle rule
  covers half-copied files elsewhere).
- saves: like batch, with many one-line documents and `index.vector_save_interval_seconds` at
  0.2 s, so the kill often lands during a vector-index save.

After each restart: lost = acknowledged documents not listed by `GET /api/v1/documents` once jobs
settle (waiting up to --settle seconds); a disagreement = `/readyz` chunk count (DuckDB) differing
from the Tantivy (bm25) or USearch (vectors) count after that wait. Each workload uses one
collection, so the totals of /readyz are that collection's counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import REPO, percentile  # noqa: E402

WORKLOADS = ("batch", "git", "dropfolder", "saves")
ACTIVE = ("queued", "running")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`appliance serve` on a fixed data dir, killed with SIGKILL and restarted on it."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "APPLIANCE_LOG_FORMAT": "text",
            "APPLIANCE_LLM__LOAD_AT_START": "false",
            **env,
        }
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300) -> float:
        """Starts the server; returns seconds until /readyz answered 200."""
        cmd = [
            sys.executable,
            "-m",
            "appliance",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
        ]
        log = open(self.log_path, "ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        log.close()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {timeout}s; see {self.log_path}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self) -> httpx.Client:
        key = (self.data_dir / "admin.key").read_text().strip()
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@dataclass
class Tally:
    workload: str
    rounds: int = 0
    kills: int = 0
    restarts: int = 0
    acknowledged: int = 0
    lost: int = 0
    disagreements: int = 0
    unsettled: int = 0  # checks that ran out of time with ingestion still at work: no verdict
    restart_seconds: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self) -> dict:
        return {
            "workload": self.workload,
            "rounds": self.rounds,
            "kills": self.kills,
            "restarts": self.restarts,
            "acknowledged": self.acknowledged,
            "lost": self.lost,
            "disagreements": self.disagreements,
            "unsettled": self.unsettled,
            "restart_p50_s": round(percentile(self.restart_seconds, 50), 2),
            "restart_max_s": round(max(self.restart_seconds, default=float("nan")), 2),
            "notes": self.notes,
        }


def _git(repo: Path, *args: str) -> None:
    env = {
        "GIT_AUTHOR_NAME": "Chaos",
        "GIT_AUTHOR_EMAIL": "chaos@example.org",
        "GIT_COMMITTER_NAME": "Chaos",
        "GIT_COMMITTER_EMAIL": "chaos@example.org",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def _text(tag: str) -> str:
    return (
        f"# Note {tag}\n\nThe code word of this note is zq{tag.replace('-', '')}x. It records item {tag}.\n"
    )


class Workload:
    """One kind of ingest work; `run` goes until `stop` is set, recording what was acknowledged."""

    collection = "chaos"
    env: dict[str, str] = {}

    def __init__(self, root: Path, rng: random.Random, batch: int) -> None:
        self.root = root
        self.rng = rng
        self.batch = batch
        self.acknowledged: set[str] = set()

    def setup(self, client: httpx.Client) -> None:
        client.post("/api/v1/collections", json={"name": self.collection})

    def run(self, client: httpx.Client, round_no: int, stop: threading.Event) -> None:
        raise NotImplementedError


class Batch(Workload):
    def _documents(self, round_no: int, n: int) -> list[dict]:
        return [
            {"source_id": f"b-{round_no}-{n}-{i}", "text": _text(f"{round_no}-{n}-{i}")}
            for i in range(self.batch)
        ]

    def run(self, client, round_no, stop):
        n = 0
        while not stop.is_set():
            docs = self._documents(round_no, n)
            response = client.post(
                "/api/v1/documents/batch", json={"collection": self.collection, "documents": docs}
            )
            if response.status_code == 202:
                self.acknowledged.update(d["source_id"] for d in docs)
            n += 1


class Saves(Batch):
    env = {"APPLIANCE_INDEX__VECTOR_SAVE_INTERVAL_SECONDS": "0.2"}

    def _documents(self, round_no, n):
        return [
            {"source_id": f"s-{round_no}-{n}-{i}", "text": f"Line {round_no}.{n}.{i}."}
            for i in range(self.batch * 3)
        ]


class Git(Workload):
    env = {"APPLIANCE_DROPFOLDER__ENABLED": "false"}
    source = "chaosrepo"

    def setup(self, client):
        self.repo = self.root / "repo"
        self.repo.mkdir()
        _git(self.repo, "init", "-q", "-b", "main")
        self.files: list[str] = []
        self._commit(0, max(10 * self.batch, 30))
        response = client.post(
            "/api/v1/sources",
            json={"name": self.source, "location": str(self.repo), "collection": self.collection},
        )
        response.raise_for_status()

    def _commit(self, round_no: int, count: int) -> None:
        for i in range(count):
            path = f"notes/r{round_no}/n{i}.md"
            (self.repo / path).parent.mkdir(parents=True, exist_ok=True)
            (self.repo / path).write_text(_text(f"{round_no}-{i}"))
            self.files.append(path)
        _git(self.repo, "add", "-A")
        _git(self.repo, "commit", "-q", "-m", f"round {round_no}")

    def run(self, client, round_no, stop):
        if round_no > 0:
            self._commit(round_no, max(self.batch, 10))
        at_commit = list(self.files)
        response = client.post(f"/api/v1/sources/{self.source}/sync")
        if response.status_code == 202:
            self.acknowledged.update(f"git:{self.source}:{p}" for p in at_commit)


class DropFolder(Workload):
    env = {
        "APPLIANCE_DROPFOLDER__SETTLE_SECONDS": "0.3",
        "APPLIANCE_DROPFOLDER__SCAN_INTERVAL_SECONDS": "2",
    }

    def setup(self, client):
        pass  # the collection appears with its first file

    def run(self, client, round_no, stop):
        folder = self.root / "data" / "inbox" / self.collection / f"r{round_no}"
        folder.mkdir(parents=True, exist_ok=True)
        i = 0
        while not stop.is_set():
            path = folder / f"n{i}.md"
            path.write_text(_text(f"{round_no}-{i}"))  # closed here: from now on it is acknowledged
            self.acknowledged.add(f"inbox:r{round_no}/n{i}.md")
            i += 1
            time.sleep(0.01)  # a burst of copies, not a busy loop


CLASSES = {"batch": Batch, "git": Git, "dropfolder": DropFolder, "saves": Saves}


def listed(client: httpx.Client, collection: str) -> set[str]:
    found: set[str] = set()
    offset = 0
    while True:
        response = client.get(
            "/api/v1/documents", params={"collection": collection, "limit": 1000, "offset": offset}
        )
        if response.status_code == 404:
            return found
        response.raise_for_status()
        page = response.json()["documents"]
        found.update(d["source_id"] for d in page)
        if len(page) < 1000:
            return found
        offset += 1000


def settled_check(
    server: Server, client: httpx.Client, work: Workload, timeout: float
) -> tuple[int, bool, bool]:
    """Waits until jobs are done, every acknowledged document is listed and the stores agree;
    returns (missing, agree, settled). Past `timeout` it stops once no job is active (what is
    missing then is lost); while jobs are still at work it keeps waiting, up to four times the
    timeout, and then says `settled` False: on a slow machine unfinished work is no loss."""
    start = time.monotonic()
    deadline, hard = start + timeout, start + 4 * timeout
    while True:
        jobs = client.get("/api/v1/jobs", params={"limit": 500}).json()
        busy = any(j["state"] in ACTIVE for j in jobs)
        ready = httpx.get(f"{server.url}/readyz", timeout=10).json()
        counts = {name: s["count"] for name, s in ready["indexes"].items()}
        agree = counts == {"bm25": ready["chunks"], "vectors": ready["chunks"]}
        missing = work.acknowledged - listed(client, work.collection)
        now = time.monotonic()
        if (not busy and agree and not missing) or (now > deadline and not busy) or now > hard:
            return len(missing), agree, not busy
        time.sleep(0.3)


def run_workload(
    name: str, rounds: int, seed: int, batch: int = 40, settle: float = 180, max_delay: float = 4.0
) -> Tally:
    tally = Tally(name)
    rng = random.Random(f"{seed}-{name}")
    with tempfile.TemporaryDirectory(prefix=f"appliance-chaos-{name}-") as tmp:
        root = Path(tmp)
        work = CLASSES[name](root, rng, batch)
        server = Server(root / "data", work.env)
        try:
            tally.restart_seconds.append(server.start())
            with server.client() as client:
                work.setup(client)
            for round_no in range(rounds + 1):
                if round_no > 0:  # restart after the previous round's kill
                    tally.restart_seconds.append(server.start())
                    tally.restarts += 1
                with server.client() as client:
                    missing, agree, settled = settled_check(server, client, work, settle)
                    if not settled:
                        tally.unsettled += 1
                        tally.notes.append(
                            f"round {round_no}: jobs still running after {4 * settle:.0f} s "
                            f"({missing} acknowledged documents not listed yet)"
                        )
                    else:
                        tally.lost = max(tally.lost, missing)  # acknowledged sets are cumulative
                        tally.disagreements += 0 if agree else 1
                        if missing:
                            tally.notes.append(f"round {round_no}: {missing} acknowledged documents missing")
                    if round_no == rounds:
                        break
                    stop = threading.Event()
                    worker = threading.Thread(
                        target=_quietly, args=(work.run, client, round_no, stop), daemon=True
                    )
                    worker.start()
                    time.sleep(rng.uniform(0.05, max_delay))
                    server.kill()
                    stop.set()
                    worker.join(60)
                    tally.kills += 1
                    tally.rounds += 1
            tally.acknowledged = len(work.acknowledged)
        finally:
            server.stop()
    return tally


def _quietly(run, client, round_no, stop) -> None:
    try:
        run(client, round_no, stop)
    except httpx.HTTPError:
        pass  # the kill cut the connection: whatever was answered before is what was acknowledged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=50, help="kills per workload")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--batch", type=int, default=40, help="documents per batch request")
    parser.add_argument("--settle", type=float, default=180, help="seconds to wait for jobs after a restart")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for name in args.workloads.split(","):
        tally = run_workload(name, args.rounds, args.seed, batch=args.batch, settle=args.settle)
        rows.append(tally.row())
        if not args.json:
            print(f"{name}: done ({tally.kills} kills)", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        head = f"{'workload':<11} {'rounds':>6} {'kills':>5} {'restarts':>8} {'acked':>6} {'lost':>4} {'disagree':>8} {'unsettled':>9} {'restart p50':>11} {'max':>6}"
        print(head)
        for r in rows:
            print(
                f"{r['workload']:<11} {r['rounds']:>6} {r['kills']:>5} {r['restarts']:>8} {r['acknowledged']:>6} "
                f"{r['lost']:>4} {r['disagreements']:>8} {r['unsettled']:>9} {r['restart_p50_s']:>10}s "
                f"{r['restart_max_s']:>5}s"
            )
            for note in r["notes"]:
                print(f"  {note}")
    return 1 if any(r["lost"] or r["disagreements"] or r["unsettled"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
