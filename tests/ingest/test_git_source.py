"""GitRepository against real repositories built with the machine's git in a temp dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from appliance.errors import InvalidInput
from appliance.ingest.sources.git import GitChange, GitError, GitRepository, path_bytes, printable_path

_ENV = {
    "PATH": os.environ.get("PATH", os.defpath),
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Ada Lovelace",
    "GIT_AUTHOR_EMAIL": "ada@example.org",
    "GIT_COMMITTER_NAME": "Ada Lovelace",
    "GIT_COMMITTER_EMAIL": "ada@example.org",
    "GIT_COMMITTER_DATE": "2024-03-01T10:00:00+02:00",
    "GIT_AUTHOR_DATE": "2024-03-01T10:00:00+02:00",
}


def git(cwd: Path, *args: str | bytes) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=_ENV, capture_output=True, check=True)
    return done.stdout.decode("utf-8", "replace").strip()


def write(root: Path, name: str | bytes, content: bytes | str) -> None:
    target = os.path.join(os.fsencode(root), os.fsencode(name))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as handle:
        handle.write(content.encode() if isinstance(content, str) else content)


def commit(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", message)
    return git(root, "rev-parse", "HEAD")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    return root


def by_path(changes: list[GitChange]) -> dict[tuple[str, str], GitChange]:
    return {(c.path, c.action): c for c in changes}


def test_first_sync_then_add_modify_delete_rename(work: Path) -> None:
    write(work, "README.md", "# Project\n")
    write(work, "docs/guide.md", "A guide to the project.\n" * 20)
    write(work, "docs/old-name.md", "This document is long enough to be recognised after its move.\n" * 10)
    write(work, "gone.txt", "soon deleted\n")
    write(work, "run.sh", "#!/bin/sh\necho hi\n")
    os.chmod(work / "run.sh", 0o755)
    first = commit(work, "first")

    repo = GitRepository(work)
    assert repo.resolve("main") == first
    files = {f.path: f for f in repo.list_files(first)}
    assert sorted(files) == ["README.md", "docs/guide.md", "docs/old-name.md", "gone.txt", "run.sh"]
    assert files["README.md"].size == len("# Project\n")
    assert files["README.md"].blob == git(work, "rev-parse", "HEAD:README.md")
    assert files["run.sh"].executable and not files["README.md"].executable

    initial = repo.diff(None, first)
    assert initial.full and initial.commit == first
    assert {c.path for c in initial.changes} == set(files)
    assert all(c.action == "upsert" and c.blob == files[c.path].blob for c in initial.changes)

    write(work, "README.md", "# Project\n\nNow with more words.\n")
    write(work, "new.md", "brand new\n")
    (work / "gone.txt").unlink()
    git(work, "mv", "docs/old-name.md", "docs/new-name.md")
    second = commit(work, "second")

    change = repo.diff(first, second)
    assert not change.full and change.commit == second
    changes = by_path(change.changes)
    assert set(changes) == {
        ("README.md", "upsert"),
        ("new.md", "upsert"),
        ("gone.txt", "delete"),
        ("docs/old-name.md", "delete"),
        ("docs/new-name.md", "upsert"),
    }
    renamed = changes[("docs/new-name.md", "upsert")]
    assert renamed.renamed_from == "docs/old-name.md"
    assert renamed.blob == files["docs/old-name.md"].blob and renamed.size == files["docs/old-name.md"].size
    readme = changes[("README.md", "upsert")]
    assert readme.renamed_from is None
    assert readme.size == len("# Project\n\nNow with more words.\n")
    assert dict(repo.read_blobs([readme.blob], 1000)) == {readme.blob: b"# Project\n\nNow with more words.\n"}
    assert changes[("gone.txt", "delete")].blob is None
    assert repo.diff(second, second).changes == []
    assert not repo.diff(second, second).full


def test_unknown_or_missing_old_commit_gives_full_listing(work: Path) -> None:
    write(work, "a.md", "one\n")
    commit(work, "one")
    write(work, "b.md", "two\n")
    head = commit(work, "two")
    repo = GitRepository(work)
    # A commit id the repository never had (or lost to gc after a force-push): list everything.
    gone = repo.diff("0123456789abcdef0123456789abcdef01234567", head)
    assert gone.full and {c.path for c in gone.changes} == {"a.md", "b.md"}


def test_force_push_diffs_trees_not_history(work: Path) -> None:
    write(work, "keep.md", "kept\n")
    base = commit(work, "base")
    write(work, "abandoned.md", "only on the rewritten branch\n")
    abandoned = commit(work, "abandoned")
    git(work, "reset", "-q", "--hard", base)
    write(work, "replacement.md", "replacement\n")
    rewritten = commit(work, "rewritten")
    diff = GitRepository(work).diff(abandoned, rewritten)
    assert not diff.full
    assert set(by_path(diff.changes)) == {("abandoned.md", "delete"), ("replacement.md", "upsert")}


def test_bare_clone_reads_the_same(work: Path, tmp_path: Path) -> None:
    write(work, "x/y.md", "nested\n")
    head = commit(work, "one")
    git(tmp_path, "clone", "-q", "--bare", str(work), str(tmp_path / "mirror.git"))
    bare = GitRepository(tmp_path / "mirror.git")
    assert bare.git_dir == str((tmp_path / "mirror.git").resolve())
    assert bare.resolve("main") == head
    assert bare.resolve("refs/heads/main") == head
    assert [f.path for f in bare.list_files(head)] == ["x/y.md"]


def test_branch_missing_lists_the_branches(work: Path) -> None:
    commit(work, "one")
    git(work, "branch", "dev")
    git(work, "branch", "-m", "main", "trunk")
    repo = GitRepository(work)
    with pytest.raises(GitError) as caught:
        repo.resolve("main")
    assert caught.value.detail == f"branch 'main' not found in {work} (branches: dev, trunk)"
    assert caught.value.status == 400 and isinstance(caught.value, InvalidInput)


def test_branch_names_are_never_options_or_revision_expressions(work: Path) -> None:
    first = commit(work, "one")
    commit(work, "two")
    repo = GitRepository(work)
    for name in ("-h", "--output=/tmp/x", ""):
        with pytest.raises(GitError, match="invalid branch name"):
            repo.resolve(name)
    # "main~1" would be the parent commit to rev-parse; here it is just a branch that does not exist.
    with pytest.raises(GitError, match="not found"):
        repo.resolve("main~1")
    with pytest.raises(GitError, match="invalid commit"):
        repo.list_files("--output=/tmp/x")
    with pytest.raises(GitError, match="invalid commit"):
        repo.diff(first, "HEAD")


def test_remote_tracking_and_tag_refs_resolve(work: Path, tmp_path: Path) -> None:
    head = commit(work, "one")
    git(work, "tag", "-a", "v1", "-m", "release")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(work), str(clone))
    repo = GitRepository(clone)
    assert repo.resolve("origin/main") == head
    assert repo.resolve("refs/remotes/origin/main") == head
    assert repo.resolve("refs/tags/v1") == head  # annotated tag peeled to its commit


def test_not_a_repository(tmp_path: Path, work: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(GitError) as caught:
        GitRepository(plain)
    assert caught.value.detail.startswith(f"not a git repository: {plain}")
    with pytest.raises(GitError, match="no such directory"):
        GitRepository(tmp_path / "missing")
    # A folder inside a work tree is not itself a repository: no discovery upwards.
    (work / "docs").mkdir()
    with pytest.raises(GitError, match="not a git repository"):
        GitRepository(work / "docs")


def test_git_missing_and_timeout(work: Path, tmp_path: Path) -> None:
    with pytest.raises(GitError, match="git is not installed"):
        GitRepository(work, git_binary=str(tmp_path / "no-git-here"))
    # A git that hangs, with a child holding the output pipe: the whole process group must go.
    hanging = tmp_path / "hanging-git"
    hanging.write_text("#!/bin/sh\nsleep 30\necho never\n")
    hanging.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(GitError, match=r"git timed out after 0\.5 s"):
        GitRepository(work, git_binary=str(hanging), timeout=0.5)
    assert time.monotonic() - started < 10


def test_symlinks_and_submodules_are_skipped(work: Path) -> None:
    write(work, "real.md", "content\n")
    os.symlink("real.md", work / "link.md")
    git(work, "add", "-A")
    # A gitlink (mode 160000) is what a submodule looks like in the tree.
    git(work, "update-index", "--add", "--cacheinfo", f"160000,{'a' * 40},vendor/lib")
    git(work, "commit", "-q", "-m", "links")
    head = git(work, "rev-parse", "HEAD")
    assert "120000" in git(work, "ls-tree", "-r", head) and "160000" in git(work, "ls-tree", "-r", head)
    repo = GitRepository(work)
    assert [f.path for f in repo.list_files(head)] == ["real.md"]
    assert [c.path for c in repo.diff(None, head).changes] == ["real.md"]

    # A file turned into a symlink is deleted; the symlink turned back into a file is upserted.
    (work / "real.md").unlink()
    os.symlink("elsewhere", work / "real.md")
    to_link = commit(work, "file to link")
    assert by_path(repo.diff(head, to_link).changes).keys() == {("real.md", "delete")}
    (work / "real.md").unlink()
    write(work, "real.md", "back\n")
    to_file = commit(work, "link to file")
    assert by_path(repo.diff(to_link, to_file).changes).keys() == {("real.md", "upsert")}


ODD_NAMES: list[bytes] = [
    b"with space.md",
    "résumé ü 日本語.md".encode(),
    "cafe\u0301 decomposed.md".encode(),
    b"latin1-caf\xe9.txt",
    b"line\nbreak.md",
    b"quote\"and'tick.md",
    b"tab\there.md",
    b"back\\slash.md",
]


def test_odd_names_round_trip(work: Path) -> None:
    for index, name in enumerate(ODD_NAMES):
        write(work, name, f"content {index}\n")
    head = commit(work, "odd names")
    repo = GitRepository(work)
    files = repo.list_files(head)
    assert sorted(path_bytes(f.path) for f in files) == sorted(ODD_NAMES)
    contents = dict(repo.read_blobs([f.blob for f in files], 1000))
    for f in files:
        index = ODD_NAMES.index(path_bytes(f.path))
        assert contents[f.blob] == f"content {index}\n".encode()
        # The name git returns opens the very file on disk.
        with open(os.path.join(os.fsencode(work), path_bytes(f.path)), "rb") as handle:
            assert handle.read() == contents[f.blob]
    latin = next(f.path for f in files if path_bytes(f.path) == b"latin1-caf\xe9.txt")
    assert printable_path(latin) == "latin1-caf\\xe9.txt"
    printable_path(latin).encode("utf-8")  # storable anywhere

    # Renames and deletes of odd names come through diff unchanged too.
    git(work, "mv", os.fsdecode(b"line\nbreak.md"), "plain.md")
    (work / "with space.md").unlink()
    second = commit(work, "renames")
    changes = by_path(repo.diff(head, second).changes)
    assert changes[("plain.md", "upsert")].renamed_from == "line\nbreak.md"
    assert ("with space.md", "delete") in changes


def test_read_blobs_caps_size_and_keeps_order(work: Path) -> None:
    write(work, "small.txt", b"tiny")
    write(work, "big.bin", os.urandom(300_000))
    write(work, "empty.txt", b"")
    head = commit(work, "sizes")
    repo = GitRepository(work)
    files = {f.path: f for f in repo.list_files(head)}
    order = [files["big.bin"].blob, files["small.txt"].blob, files["empty.txt"].blob, files["small.txt"].blob]
    result = list(repo.read_blobs(order, max_bytes=1000))
    assert result == [(order[0], None), (order[1], b"tiny"), (order[2], b""), (order[3], b"tiny")]
    whole = dict(repo.read_blobs([files["big.bin"].blob], max_bytes=300_000))
    assert whole[files["big.bin"].blob] == (work / "big.bin").read_bytes()
    assert list(repo.read_blobs([], 10)) == []
    with pytest.raises(GitError, match="missing"):
        list(repo.read_blobs(["0123456789abcdef0123456789abcdef01234567"], 10))
    with pytest.raises(GitError, match="not a blob"):
        list(repo.read_blobs([head], 10))
    # Stopping half way closes the cat-file process without reading the rest.
    reader = repo.read_blobs([files["small.txt"].blob] * 3, 100)
    assert next(reader) == (files["small.txt"].blob, b"tiny")
    reader.close()


def test_merges_lists_no_ff_merges_with_their_files(work: Path) -> None:
    write(work, "base.md", "base\n")
    base = commit(work, "base")
    git(work, "checkout", "-q", "-b", "feature/search")
    write(work, "search.md", "search docs\n")
    write(work, "base.md", "base, improved\n")
    commit(work, "add search")
    git(work, "checkout", "-q", "main")
    write(work, "direct.md", "committed straight to main\n")
    commit(work, "direct commit")
    git(
        work,
        "merge",
        "-q",
        "--no-ff",
        "feature/search",
        "-m",
        "Merge pull request #7 from feature/search",
        "-m",
        "Adds the search guide.\n\nReviewed-by: Grace",
    )
    first_merge = git(work, "rev-parse", "HEAD")
    git(work, "checkout", "-q", "-b", "fix")
    git(work, "rm", "-q", "direct.md")
    commit(work, "remove direct")
    git(work, "checkout", "-q", "main")
    git(work, "merge", "-q", "--no-ff", "fix", "-m", "Merge fix")
    head = git(work, "rev-parse", "HEAD")

    repo = GitRepository(work)
    merges = repo.merges(head)
    assert [m.sha for m in merges] == [head, first_merge]
    latest, earlier = merges
    assert latest.subject == "Merge fix" and latest.files == ["direct.md"]
    assert earlier.subject == "Merge pull request #7 from feature/search"
    assert earlier.body == "Adds the search guide.\n\nReviewed-by: Grace"
    assert sorted(earlier.files) == ["base.md", "search.md"]
    assert earlier.author == "Ada Lovelace"
    assert earlier.date == datetime.fromisoformat("2024-03-01T10:00:00+02:00")
    assert earlier.date.utcoffset() == timedelta(hours=2)
    assert [m.sha for m in repo.merges(head, since=first_merge)] == [head]
    assert [m.sha for m in repo.merges(head, limit=1)] == [head]
    assert repo.merges(base) == []
    assert repo.commit_time(head) == datetime.fromisoformat("2024-03-01T10:00:00+02:00")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a repository's owner needs root")
def test_repository_owned_by_another_user(work: Path, tmp_path: Path) -> None:
    head = commit(work, "one")
    shutil.chown(work, 65534, 65534)
    for folder, dirs, names in os.walk(work):
        for name in dirs + names:
            os.lchown(os.path.join(folder, name), 65534, 65534)
    plain = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], env=_ENV, capture_output=True)
    assert plain.returncode != 0 and b"dubious ownership" in plain.stderr
    assert GitRepository(work).resolve("main") == head
