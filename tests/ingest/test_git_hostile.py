"""Git sources with `fetch` against hostile repositories: their config never runs a program or picks where
git connects, and only https/ssh remotes that network.allow admits are fetched. Real repositories made
with the machine's git in temp dirs, a real SourceService on DuckDB, and a real https git server
(git's "dumb" protocol over TLS, served from a thread) on loopback."""

from __future__ import annotations

import functools
import http.server
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.config import load_settings
from appliance.db.catalog import Catalog
from appliance.db.connection import Database
from appliance.db.jobs import JobStore
from appliance.db.migrations import migrate
from appliance.errors import InvalidInput
from appliance.ingest.sources.git import GitError, GitRepository
from appliance.ingest.sources.gitfetch import fetch
from appliance.ingest.sources.remotes import RemotePolicy, RemoteRefused, parse_remote
from appliance.ingest.sources.service import SourceService
from appliance.observability.metrics import Metrics

ALLOW = ["git.internal.example", "10.0.0.0/8"]
_ENV = {
    "PATH": os.environ.get("PATH", os.defpath),
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Ada Lovelace",
    "GIT_AUTHOR_EMAIL": "ada@example.org",
    "GIT_COMMITTER_NAME": "Ada Lovelace",
    "GIT_COMMITTER_EMAIL": "ada@example.org",
}


def git(cwd: Path, *args: str) -> str:
    env = _ENV | ({"GIT_SSL_CAINFO": os.environ["GIT_SSL_CAINFO"]} if "GIT_SSL_CAINFO" in os.environ else {})
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=True, text=True)
    return done.stdout.strip()


def commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"add {name}")
    return git(repo, "rev-parse", "HEAD")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files (git's dumb http protocol); everything under /private/ asks for a password."""

    def do_GET(self) -> None:
        if self.path.startswith("/private/"):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class GitServer:
    root: Path
    base: str  # https://127.0.0.1:<port>

    def publish(self, work: Path, name: str) -> str:
        """`work`'s branches as a bare repository served at the returned URL (again after new commits)."""
        bare = self.root / name
        if bare.exists():
            git(
                work,
                "push",
                "-q",
                "--force",
                "--prune",
                str(bare),
                "refs/heads/*:refs/heads/*",
                "refs/tags/*:refs/tags/*",
            )
        else:
            git(self.root, "clone", "-q", "--bare", str(work), str(bare))
        git(bare, "update-server-info")
        return f"{self.base}/{name}"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[GitServer]:
    root = tmp_path_factory.mktemp("served")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root))
    )
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    previous = os.environ.get("GIT_SSL_CAINFO")
    os.environ["GIT_SSL_CAINFO"] = str(cert)  # the service's environment names the internal CA
    yield GitServer(root, f"https://127.0.0.1:{httpd.server_address[1]}")
    if previous is None:
        os.environ.pop("GIT_SSL_CAINFO", None)
    else:
        os.environ["GIT_SSL_CAINFO"] = previous
    httpd.shutdown()
    httpd.server_close()


@dataclass
class World:
    service: SourceService
    jobs: JobStore

    def attempt(self, repo: Path, name: str) -> str:
        """Add `repo` as a git source with `fetch`, then sync it once: how that ended."""
        try:
            self.service.add("git", name, "hostile", str(repo), options={"fetch": True})
        except InvalidInput as exc:
            return f"refused: {exc.detail}"
        job_id = self.jobs.create("sync", "hostile", [], source=name)
        self.service.run_sync(self.jobs.get(job_id))
        job = self.jobs.get(job_id)
        return f"{job.state}: {job.error or ''}"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("hostile") / "data"
    settings = load_settings(
        environ={},
        overrides={"data_dir": str(data), "dropfolder": {"enabled": False}, "network": {"allow": ALLOW}},
    )
    db = Database(data / "appliance.duckdb")
    migrate(db)
    jobs = JobStore(db)
    yield World(SourceService(settings, db, Catalog(db), jobs, lambda _job: None, Metrics()), jobs)
    db.close()


# Each vector: what the repository's .git/config says ({evil} writes the marker file), and how the
# add-then-sync must end. Before the fix every "marker" vector ran {evil}.
VECTORS = {
    # ext:: runs any command; the repository even allows the protocol for itself.
    "ext_remote": (
        '[protocol "ext"]\n\tallow = always\n[remote "origin"]\n\turl = ext::sh -c touch% {marker}\n',
        "refused: remote 'origin' of",
    ),
    # git runs core.sshCommand (first with -G, to guess its kind) for an ssh remote.
    "ssh_command": (
        '[core]\n\tsshCommand = {evil}\n[remote "origin"]\n\turl = ssh://127.0.0.1:1/repo.git\n',
        "failed: git fetch failed",
    ),
    # The same setting from a file the config includes.
    "include_path": (
        '[include]\n\tpath = {include}\n[remote "origin"]\n\turl = ssh://127.0.0.1:1/repo.git\n',
        "failed: git fetch failed",
    ),
    # A URL rewrite turns an allowed https URL into ext:: after our check: the fetch must use the URL as written.
    "insteadof_rewrite": (
        '[protocol "ext"]\n\tallow = always\n[url "ext::sh -c touch% {marker} #"]\n\tinsteadOf = {served}\n'
        '[remote "origin"]\n\turl = {served}\n',
        "succeeded",
    ),
    # A local path remote: git runs the remote's `uploadpack` program.
    "local_uploadpack": (
        '[remote "origin"]\n\turl = {upstream}\n\tuploadpack = {evil}\n',
        "refused: remote 'origin' of",
    ),
    # file:// reads this machine's files: refused, whatever it holds.
    "file_url": ('[remote "origin"]\n\turl = file://{upstream}\n', "refused: remote 'origin' of"),
    # A credential helper runs when the server asks for a password.
    "credential_helper": (
        '[credential]\n\thelper = !{evil}\n[remote "origin"]\n\turl = {private}\n',
        "failed: git fetch failed",
    ),
    # A proxy from the repository would send git's traffic elsewhere (here a closed port: the fetch fails).
    "proxy": ('[http]\n\tproxy = http://127.0.0.1:1\n[remote "origin"]\n\turl = {served}\n', "succeeded"),
    "fsmonitor": ('[core]\n\tfsmonitor = {evil}\n[remote "origin"]\n\turl = {served}\n', "succeeded"),
    "filter_driver": (
        '[filter "evil"]\n\tsmudge = {evil}\n\tclean = {evil}\n\tprocess = {evil}\n'
        '[remote "origin"]\n\turl = {served}\n',
        "succeeded",
    ),
    # Hooks in the repository (a fetch updates refs: reference-transaction would run).
    "hooks": ('[remote "origin"]\n\turl = {served}\n', "succeeded"),
}


@pytest.mark.parametrize("vector", sorted(VECTORS))
def test_repository_config_never_runs_or_redirects(vector, world, server, tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    evil.chmod(0o755)
    (tmp_path / "include.cfg").write_text(f"[core]\n\tsshCommand = {evil}\n")
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q", "-b", "main")
    head = commit(upstream, "a.md", "# Upstream\n\nFetched from the server.\n")
    served = server.publish(upstream, f"{vector}.git")

    repo = tmp_path / "repo"
    git(tmp_path, "clone", "-q", str(upstream), str(repo))
    git(repo, "remote", "remove", "origin")
    (repo / ".gitattributes").write_text("* filter=evil\n")
    for hook in ("reference-transaction", "post-checkout", "post-merge", "pre-auto-gc", "post-index-change"):
        (repo / ".git" / "hooks" / hook).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (repo / ".git" / "hooks" / hook).chmod(0o755)
    config, expected = VECTORS[vector]
    with open(repo / ".git" / "config", "a") as handle:
        # The CA in the repository's own config too: the code before this fix honoured it, so its
        # https vectors got as far as they could (the fetch now ignores it: GIT_SSL_CAINFO counts).
        handle.write(f"[http]\n\tsslCAInfo = {server.root / 'cert.pem'}\n")
        handle.write(
            config.format(
                marker=marker,
                evil=evil,
                include=tmp_path / "include.cfg",
                upstream=upstream,
                served=served,
                private=f"{server.base}/private/{vector}.git",
            )
        )

    outcome = world.attempt(repo, vector.replace("_", "-"))
    assert not marker.exists(), f"{vector}: the repository's config ran a program ({outcome})"
    assert outcome.startswith(expected), outcome
    if expected == "succeeded":
        assert git(repo, "rev-parse", "refs/remotes/origin/main") == head


def test_add_refuses_remotes_outside_network_allow(world, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "a.md", "a\n")
    git(repo, "remote", "add", "origin", "https://git.example.org/team/handbook.git")
    outcome = world.attempt(repo, "outside")
    assert outcome.startswith("refused:") and "'git.example.org' is not in settings network.allow" in outcome
    git(repo, "remote", "set-url", "origin", "git@git.internal.example:team/handbook.git")
    added = world.service.add("git", "inside", "hostile", str(repo), options={"fetch": True})
    assert added.config["fetch"] is True  # admitted by name; never synced here (no such server)
    without_fetch = world.service.add("git", "unfetched", "hostile", str(repo.parent / "repo"))
    assert without_fetch.config["fetch"] is False  # nothing is checked or fetched without `fetch`


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://git.internal.example/team/x.git", "git.internal.example"),
        ("https://user:token@10.2.3.4:8443/x.git", "10.2.3.4"),
        ("ssh://git@10.9.8.7:2222/x.git", "10.9.8.7"),
        ("git+ssh://git@Git.Internal.Example./x.git", "git.internal.example"),
        ("git@git.internal.example:team/x.git", "git.internal.example"),
        ("https://[::1]:9/x.git", "::1"),
        ("https://localhost/x.git", "localhost"),
    ],
)
def test_policy_admits_https_and_ssh_to_allowed_hosts(url, host):
    settings = load_settings(environ={}, overrides={"network": {"allow": ALLOW}})
    assert RemotePolicy(settings.network).check(url, "remote").host == host


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ext::sh -c touch% /tmp/pwned", "transport helper"),
        ("fd::3", "transport helper"),
        ("file:///srv/git/x.git", "file://"),
        ("/srv/git/x.git", "local path"),
        ("../x.git", "local path"),
        ("http://git.internal.example/x.git", "http://"),
        ("git://git.internal.example/x.git", "git://"),
        ("ftp://git.internal.example/x.git", "ftp://"),
        ("ssh://-oProxyCommand=touch%20x/y", "no valid host"),
        ("-oProxyCommand=x:y", "starts with '-'"),
        ("ssh://-l@git.internal.example/x", "invalid user"),
        ("git.internal.example:-x", "starts with '-'"),
        ("https://git.internal.example:port/x", "malformed"),
        ("https://git.example.org/x.git", "not in settings network.allow"),
        ("git@192.168.1.5:x.git", "not in settings network.allow"),
        ("", "no URL"),
    ],
)
def test_policy_refuses_everything_else(url, reason):
    settings = load_settings(environ={}, overrides={"network": {"allow": ALLOW}})
    with pytest.raises(RemoteRefused, match=reason) as caught:
        RemotePolicy(settings.network).check(url, "remote 'origin'")
    assert caught.value.status == 400


def test_guard_off_admits_any_host_but_still_only_https_and_ssh():
    settings = load_settings(environ={}, overrides={"network": {"guard": False}})
    assert RemotePolicy(settings.network).check("https://git.example.org/x", "r").host == "git.example.org"
    with pytest.raises(RemoteRefused, match="file://"):
        RemotePolicy(settings.network).check("file:///x", "r")
    assert parse_remote("ssh://h/x").scheme == "ssh"


def test_fetch_updates_bare_mirror_and_clone(server, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    commit(work, "a.md", "one\n")
    git(work, "tag", "-a", "v1", "-m", "first release")
    git(work, "branch", "doomed")
    url = server.publish(work, "mirror-test.git")
    git(tmp_path, "clone", "-q", "--bare", url, str(tmp_path / "mirror.git"))
    git(tmp_path, "clone", "-q", url, str(tmp_path / "clone"))
    policy = RemotePolicy(load_settings(environ={}).network)
    mirror, clone = GitRepository(tmp_path / "mirror.git"), GitRepository(tmp_path / "clone")

    head = commit(work, "b.md", "two\n")
    git(work, "branch", "-q", "-D", "doomed")
    git(work, "branch", "fresh")
    git(work, "tag", "v2")
    server.publish(work, "mirror-test.git")
    assert mirror.resolve("main") != head  # nothing moves without an explicit fetch
    fetch(mirror, policy)
    fetch(clone, policy, "origin")
    assert mirror.resolve("main") == head and mirror.resolve("fresh") == head
    assert clone.resolve("origin/main") == head and clone.resolve("origin/fresh") == head
    assert clone.resolve("main") != head  # a clone's own branches are the admin's, never moved
    with pytest.raises(GitError, match="branch 'doomed' not found"):
        mirror.resolve("doomed")  # pruned like `fetch --prune`
    with pytest.raises(GitError, match="branch 'origin/doomed' not found"):
        clone.resolve("origin/doomed")
    assert clone.resolve("refs/remotes/origin/HEAD") == head  # the symbolic ref survives the prune
    assert mirror.resolve("refs/tags/v2") == head and clone.resolve("refs/tags/v1") != head
    fetch(clone, policy)  # nothing new: no error, nothing moves
    assert clone.resolve("origin/main") == head
    with pytest.raises(GitError, match="remote 'upstream' not configured"):
        fetch(mirror, policy, "upstream")
    with pytest.raises(GitError, match="invalid remote name"):
        fetch(mirror, policy, "--upload-pack=touch /tmp/pwned")


def test_remote_is_checked_again_at_every_sync(world, server, tmp_path):
    marker = tmp_path / "PWNED"
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q", "-b", "main")
    commit(upstream, "a.md", "# A\n")
    repo = tmp_path / "repo"
    git(tmp_path, "clone", "-q", server.publish(upstream, "later.git"), str(repo))
    git(repo, "config", "http.sslCAInfo", str(server.root / "cert.pem"))  # as above: for the pre-fix code
    assert world.attempt(repo, "changed-later") == "succeeded: "
    # After the source was added, someone points origin at a program.
    git(repo, "config", "protocol.ext.allow", "always")
    git(repo, "remote", "set-url", "origin", f"ext::sh -c touch% {marker}")
    job_id = world.jobs.create("sync", "hostile", [], source="changed-later")
    world.service.run_sync(world.jobs.get(job_id))
    job = world.jobs.get(job_id)
    assert not marker.exists()
    assert job.state == "failed" and "transport helper" in (job.error or "")
    assert world.service.store.get("changed-later").last_error == job.error
