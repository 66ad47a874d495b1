"""Fetching a repository's remote without running anything its config asks for: the one git call that connects.

The repository is data, never code. Its config can name programs (core.sshCommand, a remote's
uploadpack, credential helpers, `url.*.insteadOf` rewrites to ext::, proxies, include files that say
the same), and command-line overrides cannot reach the keys scoped to a URL. So git never fetches in
the repository itself: its remote URL is read as plain text (no includes), checked by RemotePolicy,
and fetched by a scratch repository of our own, whose only config is ours, writing objects straight
into the repository's object store; the refs are then set in the repository with `update-ref`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from appliance.ingest.sources.git import GitError, GitRepository
from appliance.ingest.sources.remotes import Remote, RemotePolicy

_REMOTE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")
# A configured fetch refspec we follow: branches into one namespace (`+refs/heads/*:refs/remotes/origin/*`).
_BRANCH_REFSPEC = re.compile(r"\+?refs/heads/\*:(refs/[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*/)\*")
_HEADS, _TAGS, _HAVE = "refs/heads/", "refs/fetched-tags/", "refs/have/"


def _config(repo: GitRepository, common: Path, *args: str) -> list[str]:
    """Values from the repository's own config file, read as text: includes are not followed."""
    code, out = repo.run(
        "config", "--file", str(common / "config"), "--no-includes", "--null", *args, ok=(0, 1)
    )
    return [v for v in out.decode("utf-8", "surrogateescape").split("\0") if v] if code == 0 else []


def _common_dir(repo: GitRepository) -> Path:
    _, out = repo.run("rev-parse", "--path-format=absolute", "--git-common-dir")
    return Path(out.decode("utf-8", "surrogateescape").strip())


def remote_url(repo: GitRepository, remote: str = "origin") -> str:
    """The URL of `remote` as the repository's config file states it (no `insteadOf` rewriting)."""
    if not _REMOTE_NAME.fullmatch(remote or ""):
        raise GitError(f"invalid remote name: {remote!r}")
    common = _common_dir(repo)
    urls = _config(repo, common, "--get-all", f"remote.{remote}.url")
    if not urls:
        names = _config(repo, common, "--name-only", "--get-regexp", r"^remote\..*\.url$")
        remotes = sorted({n.split("\n", 1)[0][len("remote.") : -len(".url")] for n in names})
        raise GitError(
            f"remote '{remote}' not configured in {repo.path} (remotes: {', '.join(remotes) or 'none'})"
        )
    return urls[0]  # git fetches from the first URL too


def check_remote(repo: GitRepository, policy: RemotePolicy, remote: str = "origin") -> Remote:
    """The remote, if its URL is one the appliance may fetch from; RemoteRefused (a 400) otherwise."""
    return policy.check(remote_url(repo, remote), f"remote '{remote}' of {repo.path}")


def _refs(repo: GitRepository, git_dir: str | None = None, env: dict | None = None) -> dict[str, str]:
    """Every ref that is not symbolic (origin/HEAD is left alone), by name."""
    _, out = repo.run("for-each-ref", "--format=%(objectname) %(symref) %(refname)", git_dir=git_dir, env=env)
    refs = {}
    for line in out.decode("utf-8", "surrogateescape").splitlines():
        sha, symref, name = line.split(" ", 2)
        if not symref:
            refs[name] = sha
    return refs


def _target(repo: GitRepository, common: Path, remote: str) -> str:
    """The namespace that receives the remote's branches, as a plain fetch would fill it."""
    _, out = repo.run("rev-parse", "--is-bare-repository")
    bare = out.strip() == b"true"
    for spec in _config(repo, common, "--get-all", f"remote.{remote}.fetch"):
        if (match := _BRANCH_REFSPEC.fullmatch(spec)) and (bare or match[1] != _HEADS):
            return match[1]
        if spec.lstrip("+") == "refs/*:refs/*" and bare:  # a `clone --mirror`
            return _HEADS
    return _HEADS if bare else f"refs/remotes/{remote}/"


def _update(repo: GitRepository, lines: list[str]) -> None:
    if lines:
        repo.run("update-ref", "--stdin", stdin="".join(f"{line}\n" for line in lines).encode())


def fetch(repo: GitRepository, policy: RemotePolicy, remote: str = "origin") -> None:
    """Updates the repository from `remote`, pruning branches gone from it and adding new tags; a remote
    without a fetch refspec (a `clone --bare`) gets its branches mirrored into refs/heads."""
    url = check_remote(repo, policy, remote).url
    common = _common_dir(repo)
    target = _target(repo, common, remote)
    current = _refs(repo)
    env = {"GIT_OBJECT_DIRECTORY": str(common / "objects")}
    with tempfile.TemporaryDirectory(prefix="appliance-fetch-") as scratch:
        repo.run("init", "--quiet", "--bare", "--template=", scratch, git_dir=scratch)
        if (common / "shallow").is_file():
            shutil.copyfile(common / "shallow", Path(scratch) / "shallow")
        # What the repository has, so the remote sends only what is new: the branches fetched last
        # time where the fetch will update them, everything else as plain "have" refs.
        seed = [
            f"create {_HEADS}{name[len(target) :]} {sha}"
            if name.startswith(target)
            else f"create {_HAVE}{number} {sha}"
            for number, (name, sha) in enumerate(current.items())
        ]
        repo.run(
            "update-ref", "--stdin", stdin="".join(f"{s}\n" for s in seed).encode(), git_dir=scratch, env=env
        )
        repo.run(
            "fetch",
            "--prune",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-auto-maintenance",
            "--no-recurse-submodules",
            "--quiet",
            "--",
            url,
            f"+{_HEADS}*:{_HEADS}*",
            f"+refs/tags/*:{_TAGS}*",
            network=True,
            git_dir=scratch,
            env=env,
        )
        fetched = _refs(repo, scratch, env)
        if (Path(scratch) / "shallow").is_file():
            shutil.copyfile(Path(scratch) / "shallow", common / "shallow")
    branches = {target + n[len(_HEADS) :]: sha for n, sha in fetched.items() if n.startswith(_HEADS)}
    tags = {"refs/tags/" + n[len(_TAGS) :]: sha for n, sha in fetched.items() if n.startswith(_TAGS)}
    # Deletions first, in their own transaction: a branch `a` pruned and `a/b` added must not collide.
    _update(
        repo,
        [f"delete {n} {sha}" for n, sha in current.items() if n.startswith(target) and n not in branches],
    )
    _update(
        repo,
        [f"update {n} {sha}" for n, sha in branches.items() if current.get(n) != sha]
        + [f"create {n} {sha}" for n, sha in tags.items() if n not in current],  # tags are never moved
    )
