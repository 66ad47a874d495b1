"""A reader of a local git repository (bare or not) through the git command line, offline by default."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Literal

from appliance.errors import InvalidInput

_OBJECT_ID = re.compile(r"[0-9a-fA-F]{4,64}")
_STDERR_LIMIT = 1500
_NULL_ID = re.compile(rb"0+")
# Environment variables a fetch may need to reach an internal git server (the service's own setup, never
# the repository's); nothing else is inherited.
_FETCH_ENVIRONMENT = (
    "HOME",
    "SSH_AUTH_SOCK",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
)


# A repository is data, never code: on every invocation these override whatever the repository's config
# (and anything it includes) says about programs to run or ways to connect. Command-line settings win
# over every config file; keys scoped to a URL or a driver name (filters, url.*.insteadOf) cannot be
# overridden this way, so none of the commands run here reads a working tree, and fetches run in a
# scratch repository of our own (gitfetch.py) that never reads this one's config at all.
_HARDENING = (
    "core.fsmonitor=false",
    f"core.hooksPath={os.devnull}",
    "core.sshCommand=ssh",
    "core.askPass=",
    "core.pager=cat",
    "core.editor=false",
    "credential.helper=",
    "log.showSignature=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "fetch.recurseSubmodules=false",
    "submodule.recurse=false",
    "protocol.ext.allow=never",
    "protocol.fd.allow=never",
    "protocol.file.allow=never",
    "http.followRedirects=false",
)


class GitError(InvalidInput):
    """A repository that cannot be read as configured: missing, not a repository, unknown ref, git failing."""


@dataclass(frozen=True)
class GitFile:
    path: str
    blob: str
    size: int
    executable: bool


@dataclass(frozen=True)
class GitChange:
    path: str
    action: Literal["upsert", "delete"]
    blob: str | None
    size: int | None
    renamed_from: str | None = None


@dataclass(frozen=True)
class GitDiff:
    """What changed up to `commit`. With `full`, `changes` lists every file at `commit` and the caller
    deletes whatever it holds that is not listed (first sync, or the old commit no longer exists)."""

    commit: str
    full: bool
    changes: list[GitChange]


@dataclass(frozen=True)
class MergeCommit:
    sha: str
    author: str
    date: datetime
    subject: str
    body: str
    files: list[str]


def path_bytes(path: str) -> bytes:
    """The exact bytes git stores for a path this module returned (names that are not UTF-8 included)."""
    return path.encode("utf-8", "surrogateescape")


def printable_path(path: str) -> str:
    """A path that is valid UTF-8 everywhere (databases, JSON): undecodable bytes become \\xNN escapes."""
    return path_bytes(path).decode("utf-8", "backslashreplace")


def _decode_path(raw: bytes) -> str:
    # surrogateescape keeps non-UTF-8 names reversible: path_bytes() gives back the stored bytes.
    return raw.decode("utf-8", "surrogateescape")


def _trimmed(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    return text if len(text) <= _STDERR_LIMIT else text[:_STDERR_LIMIT] + " …"


def _object_id(value: str, what: str) -> str:
    # Only hex ids reach the command line, so no argument can be read as an option or a revision expression.
    if not isinstance(value, str) or not _OBJECT_ID.fullmatch(value):
        raise GitError(f"invalid {what}: {value!r} (expected a hexadecimal object id)")
    return value.lower()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    # git starts helpers (ssh, remote-https, pack-objects); killing the group keeps none holding our pipes.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class GitRepository:
    """Reads commits, trees and blobs of one local repository; only gitfetch.fetch() may touch the network."""

    def __init__(self, path: str | Path, git_binary: str = "git", timeout: float = 600.0) -> None:
        try:
            self.path = Path(path).expanduser().absolute()
        except (RuntimeError, KeyError):  # `~name/...` of a user this machine does not know
            raise GitError(f"not a git repository: {path} (no such user's home directory)") from None
        self._git = git_binary
        self._timeout = timeout
        if not self.path.is_dir():
            raise GitError(f"not a git repository: {self.path} (no such directory)")
        self._safe = [str(self.path), str(self.path.resolve())]
        self.git_dir = self._discover()

    # --- invocation ---------------------------------------------------------------------------------

    def _environment(self, network: bool, extra: dict[str, str] | None) -> dict[str, str]:
        environment = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LC_ALL": "C",
            "LANG": "C",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_NO_REPLACE_OBJECTS": "1",
            # Stops discovery at the configured directory: a folder inside some other repository is not one.
            "GIT_CEILING_DIRECTORIES": str(self.path.parent),
        }
        if network:
            environment.update({k: os.environ[k] for k in _FETCH_ENVIRONMENT if k in os.environ})
        return environment | (extra or {})

    def _argv(
        self, args: Sequence[str], network: bool, discover: bool, git_dir: str | None = None
    ) -> list[str]:
        argv = [self._git, "--no-pager", "--no-optional-locks"]
        if discover:
            argv += ["-C", str(self.path)]
        else:
            argv.append(f"--git-dir={git_dir or self.git_dir}")
        # The service user may not own the repository; its own config must not run programs on our reads.
        for directory in self._safe:
            argv += ["-c", f"safe.directory={directory}"]
        argv += ["-c", "core.quotepath=off"]
        for setting in _HARDENING:
            argv += ["-c", setting]
        # Only a fetch connects, and only over the protocols its URL was checked for (gitfetch.py).
        argv += ["-c", "protocol.allow=never"]
        if network:
            argv += ["-c", "protocol.https.allow=always", "-c", "protocol.ssh.allow=always"]
        return argv + list(args)

    def _spawn(
        self,
        argv: list[str],
        network: bool,
        stdin: int | IO[bytes],
        stderr: int | IO[bytes],
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=self._environment(network, env),
                cwd=str(self.path),
                start_new_session=True,
            )
        except FileNotFoundError:
            raise GitError(f"git is not installed (no executable {self._git!r})") from None
        except PermissionError:
            raise GitError(f"git could not be started ({self._git!r} is not executable)") from None

    def run(
        self,
        *args: str,
        network: bool = False,
        discover: bool = False,
        stdin: bytes | None = None,
        ok: tuple[int, ...] = (0,),
        git_dir: str | None = None,
        env: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """(exit status, stdout) of one git command on this repository (or on `git_dir`, with this
        repository's hardening); a status outside `ok` raises GitError with git's message."""
        process = self._spawn(
            self._argv(args, network, discover, git_dir),
            network,
            subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            subprocess.PIPE,
            env,
        )
        try:
            out, err = process.communicate(stdin, timeout=self._timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.communicate()
            raise GitError(
                f"git timed out after {self._timeout:g} s (git {args[0]} in {self.path})"
            ) from None
        if process.returncode not in ok:
            if discover:
                raise GitError(f"not a git repository: {self.path} ({_trimmed(err)})")
            raise GitError(
                f"git {args[0]} failed in {self.path} (exit {process.returncode}): {_trimmed(err)}"
            )
        return process.returncode, out

    def _discover(self) -> str:
        _, out = self.run("rev-parse", "--absolute-git-dir", discover=True)
        git_dir = out.decode("utf-8", "surrogateescape").strip()
        self._safe.append(git_dir)
        return git_dir

    # --- refs and commits ---------------------------------------------------------------------------

    def _commits_by_ref(self) -> dict[str, str]:
        # One listing, matched in Python: the branch name never reaches the command line.
        _, out = self.run(
            "for-each-ref",
            "--format=%(objectname)%00%(objecttype)%00%(*objectname)%00%(*objecttype)%00%(refname)",
        )
        commits: dict[str, str] = {}
        for line in out.decode("utf-8", "surrogateescape").splitlines():
            sha, kind, peeled, peeled_kind, ref = line.split("\0")
            if kind == "commit":
                commits[ref] = sha
            elif peeled_kind == "commit":
                commits[ref] = peeled
        return commits

    def resolve(self, branch: str) -> str:
        """The commit of refs/heads/<branch>; a full ref ("refs/...") or a remote-tracking one ("origin/main")
        is accepted too."""
        if not branch or branch.startswith("-") or any(c in branch for c in "\0\n\r"):
            raise GitError(f"invalid branch name: {branch!r}")
        commits = self._commits_by_ref()
        candidates = (
            [branch] if branch.startswith("refs/") else [f"refs/heads/{branch}", f"refs/remotes/{branch}"]
        )
        for ref in candidates:
            if ref in commits:
                return commits[ref]
        branches = sorted(ref.removeprefix("refs/heads/") for ref in commits if ref.startswith("refs/heads/"))
        raise GitError(
            f"branch '{branch}' not found in {self.path} (branches: {', '.join(branches) or 'none'})"
        )

    def _existing_commit(self, commit: str) -> str | None:
        """The full id of `commit` if the repository has it as a commit, else None."""
        sha = _object_id(commit, "commit")
        code, out = self.run("rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}", ok=(0, 1, 128))
        return out.decode("ascii").strip() if code == 0 else None

    def _commit(self, commit: str) -> str:
        sha = self._existing_commit(commit)
        if sha is None:
            raise GitError(f"commit {commit} not found in {self.path}")
        return sha

    def commit_time(self, commit: str) -> datetime:
        """When `commit` was committed, with the committer's UTC offset."""
        _, out = self.run("log", "--max-count=1", "--format=%cI", self._commit(commit))
        return datetime.fromisoformat(out.decode("ascii").strip())

    # --- trees and diffs ----------------------------------------------------------------------------

    def list_files(self, commit: str) -> list[GitFile]:
        """Every regular file at `commit`; symlinks (mode 120000) and submodules (160000) are skipped."""
        sha = _object_id(commit, "commit")
        _, out = self.run("ls-tree", "-r", "-l", "-z", "--full-tree", f"{sha}^{{commit}}")
        files = []
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, _, raw_path = record.partition(b"\t")
            mode, kind, blob, size = meta.split()
            if kind == b"blob" and mode.startswith(b"100"):
                files.append(
                    GitFile(_decode_path(raw_path), blob.decode("ascii"), int(size), mode == b"100755")
                )
        return files

    def diff(self, old_commit: str | None, new_commit: str) -> GitDiff:
        """The changes from `old_commit` to `new_commit`, with renames found (-M): a rename is a delete of the
        old path and an upsert of the new one. The trees are compared, not the history, so a force-push works
        too; an old commit that is None or gone gives a full listing instead."""
        new = self._commit(new_commit)
        old = self._existing_commit(old_commit) if old_commit is not None else None
        if old is None:
            changes = [GitChange(f.path, "upsert", f.blob, f.size) for f in self.list_files(new)]
            return GitDiff(new, True, changes)
        _, out = self.run(
            "diff-tree",
            "-r",
            "-z",
            "-M",
            "--raw",
            "--no-abbrev",
            "--no-commit-id",
            "--no-ext-diff",
            "--no-textconv",
            old,
            new,
        )
        raw_changes = _parse_raw_diff(out)
        sizes = self._sizes([blob for kind, _, blob, _ in raw_changes if kind == "upsert" and blob])
        changes = [
            GitChange(path, kind, blob, sizes[blob], renamed_from)
            if kind == "upsert"
            else GitChange(path, kind, None, None)
            for kind, path, blob, renamed_from in raw_changes
        ]
        return GitDiff(new, False, changes)

    def _sizes(self, blobs: Sequence[str]) -> dict[str, int]:
        unique = list(dict.fromkeys(blobs))
        if not unique:
            return {}
        _, out = self.run(
            "cat-file", "--batch-check", stdin="".join(f"{b}\n" for b in unique).encode("ascii")
        )
        sizes = {}
        for line in out.decode("ascii").splitlines():
            sha, kind, *rest = line.split()
            if kind != "blob":
                raise GitError(f"blob {sha} is {kind} in {self.path}")
            sizes[sha] = int(rest[0])
        return sizes

    # --- blob contents ------------------------------------------------------------------------------

    def read_blobs(self, blobs: Sequence[str], max_bytes: int) -> Iterator[tuple[str, bytes | None]]:
        """(blob id, content) for each id in order, through one `git cat-file --batch-command` process
        (git 2.36 or newer). A blob over `max_bytes` yields None and is never read."""
        ids = [_object_id(blob, "blob id") for blob in blobs]
        if not ids:
            return
        with tempfile.TemporaryFile() as stderr:
            process = self._spawn(
                self._argv(["cat-file", "--batch-command"], False, False), False, subprocess.PIPE, stderr
            )
            reader = _BatchReader(process, stderr, self._timeout, self.path)
            try:
                for sha in ids:
                    kind, size = reader.header(f"info {sha}\n", sha)
                    if kind != "blob":
                        raise GitError(f"object {sha} is a {kind}, not a blob, in {self.path}")
                    if size > max_bytes:
                        yield sha, None
                        continue
                    reader.header(f"contents {sha}\n", sha)
                    yield sha, reader.content(size)
            finally:
                reader.close()

    # --- history ------------------------------------------------------------------------------------

    def merges(self, commit: str, since: str | None = None, limit: int = 200) -> list[MergeCommit]:
        """Merge commits on the first-parent line of `commit` (the merged changes), newest first, each with
        the files it brought in. `since` excludes it and its history; a `since` that is gone is ignored."""
        args = [
            "log",
            "--first-parent",
            "--merges",
            "-z",
            "--raw",
            "--no-abbrev",
            "--no-renames",
            "--diff-merges=first-parent",
            "--no-ext-diff",
            "--no-textconv",
            "--encoding=UTF-8",
            f"--max-count={max(0, int(limit))}",
            "--format=%H%x00%an%x00%cI%x00%s%x00%b",
            self._commit(commit),
        ]
        if since is not None and (since_sha := self._existing_commit(since)) is not None:
            args.append(f"^{since_sha}")
        _, out = self.run(*args)
        return _parse_merge_log(out)


class _BatchReader:
    """Request/response over a `cat-file --batch-command` process, each response bounded by the timeout."""

    def __init__(
        self, process: subprocess.Popen[bytes], stderr: IO[bytes], timeout: float, path: Path
    ) -> None:
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        self._stdin = process.stdin
        self._fd = process.stdout.fileno()
        self._stderr = stderr
        self._timeout = timeout
        self._path = path
        self._buffer = bytearray()
        self._deadline = 0.0

    def _failure(self, what: str) -> GitError:
        _kill_group(self._process)
        self._process.wait()
        self._stderr.seek(0)
        return GitError(f"git cat-file {what} in {self._path}: {_trimmed(self._stderr.read())}")

    def _fill(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0 or not select.select([self._fd], [], [], remaining)[0]:
            _kill_group(self._process)
            raise GitError(f"git timed out after {self._timeout:g} s (git cat-file in {self._path})")
        chunk = os.read(self._fd, 1 << 16)
        if not chunk:
            raise self._failure("ended unexpectedly")
        self._buffer += chunk

    def _take(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        taken = bytes(self._buffer[:count])
        del self._buffer[:count]
        return taken

    def header(self, command: str, sha: str) -> tuple[str, int]:
        """Sends one command and reads its "<id> <type> <size>" line."""
        self._deadline = time.monotonic() + self._timeout
        try:
            self._stdin.write(command.encode("ascii"))
            self._stdin.flush()
        except BrokenPipeError:
            raise self._failure("stopped") from None
        while (end := self._buffer.find(b"\n")) < 0:
            self._fill()
        line = self._take(end + 1).decode("ascii", "replace").split()
        if len(line) == 2 and line[1] in ("missing", "ambiguous"):
            raise GitError(f"object {sha} {line[1]} in {self._path}")
        return line[1], int(line[2])

    def content(self, size: int) -> bytes:
        data = self._take(size + 1)  # the content is followed by a newline
        return data[:-1]

    def close(self) -> None:
        try:
            self._stdin.close()
        except BrokenPipeError:
            pass
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill_group(self._process)
            self._process.wait()
        finally:
            if self._process.stdout is not None:
                self._process.stdout.close()


def _parse_raw_diff(out: bytes) -> list[tuple[Literal["upsert", "delete"], str, str | None, str | None]]:
    """(action, path, new blob, renamed from) from `diff-tree -z --raw`; only regular files count, so a file
    that becomes a symlink or submodule is a delete and the reverse an upsert."""
    tokens = out.split(b"\0")
    changes: list[tuple[Literal["upsert", "delete"], str, str | None, str | None]] = []
    index = 0
    while index < len(tokens):
        meta = tokens[index].lstrip(b"\n")
        index += 1
        if not meta.startswith(b":"):
            continue
        old_mode, new_mode, _, new_blob, status = meta[1:].split()
        paths = 2 if status[:1] in (b"R", b"C") else 1
        names = [_decode_path(raw) for raw in tokens[index : index + paths]]
        index += paths
        old_is_file = old_mode.startswith(b"100")
        new_is_file = new_mode.startswith(b"100") and not _NULL_ID.fullmatch(new_blob)
        source, target = names[0], names[-1]
        if status[:1] == b"R" and old_is_file:
            changes.append(("delete", source, None, None))
        if new_is_file:
            renamed_from = source if status[:1] == b"R" and old_is_file else None
            changes.append(("upsert", target, new_blob.decode("ascii"), renamed_from))
        elif old_is_file and status[:1] != b"R":
            changes.append(("delete", target, None, None))
    return changes


def _parse_merge_log(out: bytes) -> list[MergeCommit]:
    """Parses `log -z --raw --format=%H%x00%an%x00%cI%x00%s%x00%b`: five header fields, then raw entries
    (":"-led, each followed by its path), then the next commit's header."""
    tokens = out.split(b"\0")
    merges = []
    index = 0
    while index < len(tokens):
        if not tokens[index].strip():
            index += 1
            continue
        sha, author, date, subject, body = tokens[index : index + 5]
        index += 5
        files: list[str] = []
        while index < len(tokens) and tokens[index].lstrip(b"\n").startswith(b":"):
            status = tokens[index].split()[-1]
            paths = 2 if status[:1] in (b"R", b"C") else 1
            files += [_decode_path(raw) for raw in tokens[index + 1 : index + 1 + paths]]
            index += 1 + paths
        merges.append(
            MergeCommit(
                sha=sha.strip().decode("ascii"),
                author=author.decode("utf-8", "replace"),
                date=datetime.fromisoformat(date.decode("ascii")),
                subject=subject.decode("utf-8", "replace"),
                body=body.decode("utf-8", "replace").strip(),
                files=list(dict.fromkeys(files)),
            )
        )
    return merges
