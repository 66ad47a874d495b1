"""GitHub webhook handling: signatures, payload parsing, push events and issue/PR state and rendering."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlencode

import pytest

from appliance.errors import InvalidInput, Unauthorized
from appliance.ingest.sources.github import (
    item_key,
    merge_event,
    parse_payload,
    push_event,
    render_item,
    source_id_for,
    verify_signature,
)

SECRET = b"It's a Secret to Everybody"
REPO = {
    "id": 1296269,
    "name": "handbook",
    "full_name": "acme/handbook",
    "html_url": "https://github.example.com/acme/handbook",
    "clone_url": "https://github.example.com/acme/handbook.git",
    "ssh_url": "git@github.example.com:acme/handbook.git",
    "git_url": "git://github.example.com/acme/handbook.git",
}


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def user(login: str) -> dict[str, Any]:
    return {"login": login, "id": sum(map(ord, login)), "type": "User"}


def issue(
    number: int = 42,
    *,
    state: str = "open",
    title: str = "Travel policy: per diem unclear",
    body: str | None = "What is the per diem in Lyon?",
    labels: tuple[str, ...] = ("question",),
    updated_at: str = "2024-05-01T09:00:00Z",
    pull: dict[str, Any] | None = None,
    author: str = "octocat",
    created_at: str = "2024-05-01T09:00:00Z",
) -> dict[str, Any]:
    item = {
        "id": 9000 + number,
        "number": number,
        "title": title,
        "body": body,
        "state": state,
        "user": user(author),
        "labels": [{"id": i, "name": name} for i, name in enumerate(labels)],
        "html_url": f"https://github.example.com/acme/handbook/{'pull' if pull else 'issues'}/{number}",
        "created_at": created_at,
        "updated_at": updated_at,
        "closed_at": None if state == "open" else updated_at,
        "comments": 0,
    }
    if pull is not None:
        item["pull_request"] = pull
    return item


def pull_request(
    number: int = 7, *, state: str = "open", merged: bool = False, updated_at: str = "2024-05-02T09:00:00Z"
) -> dict[str, Any]:
    return {
        "id": 7000 + number,
        "number": number,
        "title": "Add the Lyon per diem",
        "state": state,
        "body": "Adds the missing row.\n\nFixes #42",
        "user": user("hubot"),
        "labels": [{"name": "docs"}],
        "html_url": f"https://github.example.com/acme/handbook/pull/{number}",
        "created_at": "2024-05-02T09:00:00Z",
        "updated_at": updated_at,
        "merged": merged,
        "merged_at": updated_at if merged else None,
        "head": {"ref": "lyon"},
        "base": {"ref": "main"},
    }


def comment(
    comment_id: int, body: str, login: str, created: str, updated: str | None = None
) -> dict[str, Any]:
    return {
        "id": comment_id,
        "body": body,
        "user": user(login),
        "created_at": created,
        "updated_at": updated or created,
        "html_url": f"https://github.example.com/acme/handbook/issues/42#issuecomment-{comment_id}",
    }


def issues_event(action: str, **fields: Any) -> dict[str, Any]:
    return {"action": action, "issue": issue(**fields), "repository": REPO, "sender": user("octocat")}


def issue_comment_event(action: str, the_comment: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "action": action,
        "issue": issue(**fields),
        "comment": the_comment,
        "repository": REPO,
        "sender": user("octocat"),
    }


def apply(
    events: list[tuple[str, dict[str, Any]]], state: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    for event, payload in events:
        state = merge_event(state, event, payload)
    return state


# --- signatures ---------------------------------------------------------------------------------------


def test_signature_from_githubs_documentation_example() -> None:
    # The worked example in GitHub's "validating webhook deliveries" guide.
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    verify_signature(SECRET, b"Hello, World!", expected)
    assert sign(b"Hello, World!") == expected


def test_correct_signature_accepted_including_uppercase_hex() -> None:
    body = json.dumps({"zen": "Keep it logically awesome."}).encode()
    verify_signature(SECRET, body, sign(body))
    verify_signature(SECRET, body, "sha256=" + sign(body).removeprefix("sha256=").upper())


@pytest.mark.parametrize(
    ("secret", "body", "header", "sha1", "detail"),
    [
        (b"another secret", b"{}", sign(b"{}"), None, "does not match"),
        (SECRET, b'{"action": "opened "}', sign(b'{"action": "opened"}'), None, "does not match"),
        (SECRET, b"{}", None, None, "X-Hub-Signature-256 missing"),
        (SECRET, b"{}", "", None, "X-Hub-Signature-256 missing"),
        (
            SECRET,
            b"{}",
            None,
            "sha1=" + hmac.new(SECRET, b"{}", hashlib.sha1).hexdigest(),
            "X-Hub-Signature-256 missing (SHA-1 signatures are not accepted)",
        ),
        (SECRET, b"{}", "sha256=zz", None, "malformed"),
        (SECRET, b"{}", sign(b"{}").removeprefix("sha256="), None, "malformed"),
        (SECRET, b"{}", "sha1=" + "a" * 40, None, "malformed"),
        (SECRET, b"{}", sign(b"{}")[:-2], None, "malformed"),
        (b"", b"{}", sign(b"{}", b""), None, "no webhook secret"),
    ],
    ids=[
        "wrong-secret",
        "tampered",
        "missing",
        "empty",
        "sha1-only",
        "not-hex",
        "no-prefix",
        "sha1-in-256",
        "short",
        "no-secret-configured",
    ],
)
def test_bad_signatures_are_unauthorized(
    secret: bytes, body: bytes, header: str | None, sha1: str | None, detail: str
) -> None:
    with pytest.raises(Unauthorized) as caught:
        verify_signature(secret, body, header, sha1)
    assert detail in caught.value.detail
    assert caught.value.status == 401


# --- payload parsing ----------------------------------------------------------------------------------


def test_parse_json_and_form_bodies() -> None:
    payload = issues_event("opened", body="Ünïcode & symbols = fine?")
    as_json = json.dumps(payload).encode()
    assert parse_payload(as_json) == payload
    as_form = urlencode({"payload": json.dumps(payload)}).encode()
    assert parse_payload(as_form) == payload


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe", b"payload=%7B", b"payload=a&payload=b", b"other=1"],
)
def test_parse_rejects_what_is_not_an_object(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        parse_payload(body)


# --- push ---------------------------------------------------------------------------------------------


def test_push_event_to_a_branch() -> None:
    payload = {
        "ref": "refs/heads/release/2024",
        "before": "a" * 40,
        "after": "b" * 40,
        "created": False,
        "deleted": False,
        "forced": True,
        "repository": REPO,
        "commits": [],
        "pusher": {"name": "x"},
    }
    push = push_event(payload)
    assert push.repo == "acme/handbook" and push.name == "handbook"
    assert push.ref == "refs/heads/release/2024" and push.branch == "release/2024"
    assert push.after == "b" * 40 and not push.deleted
    assert push.clone_urls == (REPO["clone_url"], REPO["ssh_url"], REPO["git_url"], REPO["html_url"])


def test_push_event_tag_and_branch_deletion() -> None:
    tag = push_event({"ref": "refs/tags/v1.0", "after": "c" * 40, "deleted": False, "repository": REPO})
    assert tag.branch is None and tag.ref == "refs/tags/v1.0"
    gone = push_event({"ref": "refs/heads/old", "after": "0" * 40, "deleted": True, "repository": REPO})
    assert gone.deleted and gone.branch == "old"
    # Without the "deleted" flag, the all-zero commit id still means the branch is gone.
    assert push_event({"ref": "refs/heads/old", "after": "0" * 40, "repository": REPO}).deleted
    with pytest.raises(InvalidInput, match="repository.full_name"):
        push_event({"ref": "refs/heads/main", "after": "c" * 40})


# --- item keys ----------------------------------------------------------------------------------------


def test_item_keys_per_event() -> None:
    assert item_key("issues", issues_event("opened")) == ("acme/handbook", "issue", 42)
    on_issue = issue_comment_event("created", comment(1, "hi", "a", "2024-05-01T10:00:00Z"))
    assert item_key("issue_comment", on_issue) == ("acme/handbook", "issue", 42)
    on_pull = issue_comment_event(
        "created",
        comment(1, "hi", "a", "2024-05-01T10:00:00Z"),
        number=7,
        pull={"url": "https://api.github.example.com/repos/acme/handbook/pulls/7"},
    )
    assert item_key("issue_comment", on_pull) == ("acme/handbook", "pull", 7)
    pull = {"action": "opened", "number": 7, "pull_request": pull_request(), "repository": REPO}
    for event in ("pull_request", "pull_request_review", "pull_request_review_comment"):
        assert item_key(event, pull) == ("acme/handbook", "pull", 7)
    assert item_key("push", {"ref": "refs/heads/main", "repository": REPO}) is None
    assert item_key("star", {"action": "created", "repository": REPO}) is None
    with pytest.raises(InvalidInput, match="issue"):
        item_key("issues", {"action": "opened", "repository": REPO})
    assert source_id_for("acme/handbook", "pull", 7) == "github:acme/handbook:pull:7"


# --- issue state --------------------------------------------------------------------------------------


def test_issue_lifecycle() -> None:
    opened = apply([("issues", issues_event("opened"))])
    assert opened is not None
    assert (opened["repo"], opened["kind"], opened["number"]) == ("acme/handbook", "issue", 42)
    assert opened["title"] == "Travel policy: per diem unclear" and opened["state"] == "open"
    assert opened["author"] == "octocat" and opened["labels"] == ["question"]
    assert opened["url"].endswith("/issues/42") and opened["comments"] == {} and not opened["deleted"]

    edited = merge_event(
        opened,
        "issues",
        issues_event(
            "edited",
            title="Per diem for Lyon",
            body=None,
            labels=("question", "travel"),
            updated_at="2024-05-01T11:00:00Z",
        ),
    )
    assert edited["title"] == "Per diem for Lyon" and edited["body"] == ""
    assert edited["labels"] == ["question", "travel"]
    assert opened["title"] == "Travel policy: per diem unclear"  # the input state is left alone

    closed = merge_event(
        edited,
        "issues",
        issues_event("closed", state="closed", title="Per diem for Lyon", updated_at="2024-05-03T11:00:00Z"),
    )
    assert closed["state"] == "closed"
    reopened = merge_event(closed, "issues", issues_event("reopened", updated_at="2024-05-04T11:00:00Z"))
    assert reopened["state"] == "open"

    deleted = merge_event(reopened, "issues", issues_event("deleted", updated_at="2024-05-04T11:00:00Z"))
    assert deleted["deleted"]
    # A late, older delivery neither revives it nor rolls back the newer snapshot.
    late = merge_event(deleted, "issues", issues_event("closed", state="closed"))
    assert late["deleted"] and late["state"] == "open" and late["updated_at"] == "2024-05-04T11:00:00Z"


def test_comments_created_edited_deleted() -> None:
    first = comment(501, "The per diem is 60 EUR.", "mona", "2024-05-01T10:00:00Z")
    second = comment(502, "Thanks!", "octocat", "2024-05-01T12:00:00Z")
    state = apply(
        [
            ("issues", issues_event("opened")),
            ("issue_comment", issue_comment_event("created", first, updated_at="2024-05-01T10:00:00Z")),
            ("issue_comment", issue_comment_event("created", second, updated_at="2024-05-01T12:00:00Z")),
        ]
    )
    assert state is not None
    assert state["comments"]["comment:501"] == {
        "author": "mona",
        "body": "The per diem is 60 EUR.",
        "created_at": "2024-05-01T10:00:00Z",
        "updated_at": "2024-05-01T10:00:00Z",
        "kind": "comment",
        "url": first["html_url"],
    }
    edited = comment(
        501, "The per diem is 65 EUR since May.", "mona", "2024-05-01T10:00:00Z", "2024-05-02T08:00:00Z"
    )
    state = merge_event(state, "issue_comment", issue_comment_event("edited", edited))
    assert state["comments"]["comment:501"]["body"] == "The per diem is 65 EUR since May."
    # The original "created" delivered again (a retry) does not roll the edit back.
    state = merge_event(state, "issue_comment", issue_comment_event("created", first))
    assert state["comments"]["comment:501"]["body"] == "The per diem is 65 EUR since May."

    state = merge_event(state, "issue_comment", issue_comment_event("deleted", second))
    assert set(state["comments"]) == {"comment:501"}
    state = merge_event(state, "issue_comment", issue_comment_event("created", second))
    assert set(state["comments"]) == {"comment:501"}, "a deleted comment came back from a late delivery"


def test_comment_before_any_issue_event_creates_the_state() -> None:
    payload = issue_comment_event(
        "created",
        comment(7, "First!", "mona", "2024-05-01T10:00:00Z"),
        labels=("bug",),
        updated_at="2024-05-01T10:00:00Z",
    )
    state = merge_event(None, "issue_comment", payload)
    assert state["title"] == "Travel policy: per diem unclear" and state["labels"] == ["bug"]
    assert state["author"] == "octocat" and list(state["comments"]) == ["comment:7"]


def test_every_event_is_idempotent() -> None:
    pull = {
        "action": "closed",
        "number": 7,
        "pull_request": pull_request(state="closed", merged=True),
        "repository": REPO,
    }
    review = {
        "action": "submitted",
        "pull_request": pull_request(),
        "repository": REPO,
        "review": {
            "id": 80,
            "user": user("mona"),
            "body": "Looks right.",
            "state": "approved",
            "submitted_at": "2024-05-02T10:00:00Z",
            "html_url": "https://x/r/80",
        },
    }
    deliveries = [
        ("issues", issues_event("opened")),
        ("issues", issues_event("deleted")),
        ("issue_comment", issue_comment_event("created", comment(1, "a", "b", "2024-05-01T10:00:00Z"))),
        ("issue_comment", issue_comment_event("deleted", comment(1, "a", "b", "2024-05-01T10:00:00Z"))),
        ("pull_request", pull),
        ("pull_request_review", review),
    ]
    for event, payload in deliveries:
        once = merge_event(None, event, payload)
        assert merge_event(once, event, payload) == once
        assert json.loads(json.dumps(once)) == once  # storable as JSON as it is


def test_state_of_another_item_is_refused() -> None:
    state = merge_event(None, "issues", issues_event("opened", number=1))
    with pytest.raises(InvalidInput, match="another item"):
        merge_event(state, "issues", issues_event("edited", number=2))
    with pytest.raises(InvalidInput):
        merge_event(None, "push", {"ref": "refs/heads/main", "repository": REPO})


# --- pull requests ------------------------------------------------------------------------------------


def test_pull_request_opened_commented_reviewed_merged() -> None:
    pr_link = {"url": "https://api.github.example.com/repos/acme/handbook/pulls/7", "merged_at": None}
    # issue_comment deliveries carry the issue view of the pull request.
    as_issue = {
        "number": 7,
        "pull": pr_link,
        "title": "Add the Lyon per diem",
        "author": "hubot",
        "body": "Adds the missing row.\n\nFixes #42",
        "labels": ("docs",),
        "created_at": "2024-05-02T09:00:00Z",
    }
    events = [
        (
            "pull_request",
            {"action": "opened", "number": 7, "pull_request": pull_request(), "repository": REPO},
        ),
        (
            "issue_comment",
            issue_comment_event(
                "created",
                comment(601, "Please add Marseille too.", "mona", "2024-05-02T09:30:00Z"),
                updated_at="2024-05-02T09:30:00Z",
                **as_issue,
            ),
        ),
        (
            "pull_request_review_comment",
            {
                "action": "created",
                "pull_request": pull_request(updated_at="2024-05-02T09:40:00Z"),
                "repository": REPO,
                "comment": {
                    "id": 701,
                    "path": "travel/per-diem.md",
                    "body": "Typo: 'Lyion'.",
                    "user": user("mona"),
                    "created_at": "2024-05-02T09:40:00Z",
                    "updated_at": "2024-05-02T09:40:00Z",
                    "diff_hunk": "@@ -1 +1 @@",
                    "html_url": "https://x/c/701",
                },
            },
        ),
        (
            "pull_request_review",
            {
                "action": "submitted",
                "pull_request": pull_request(updated_at="2024-05-02T09:50:00Z"),
                "repository": REPO,
                "review": {
                    "id": 801,
                    "user": user("grace"),
                    "body": "",
                    "state": "approved",
                    "submitted_at": "2024-05-02T09:50:00Z",
                    "html_url": "https://x/r/801",
                },
            },
        ),
        (
            "pull_request_review",
            {
                "action": "submitted",
                "pull_request": pull_request(updated_at="2024-05-02T09:41:00Z"),
                "repository": REPO,
                "review": {
                    "id": 802,
                    "user": user("mona"),
                    "body": None,
                    "state": "commented",
                    "submitted_at": "2024-05-02T09:41:00Z",
                },
            },
        ),
        (
            "pull_request",
            {
                "action": "closed",
                "number": 7,
                "repository": REPO,
                "pull_request": pull_request(state="closed", merged=True, updated_at="2024-05-02T10:00:00Z"),
            },
        ),
    ]
    state = apply(events)
    assert state is not None
    assert (state["kind"], state["number"], state["state"]) == ("pull", 7, "merged")
    assert set(state["comments"]) == {"comment:601", "review_comment:701", "review:801"}
    # A later comment arrives with the issue view of the PR, which only says "closed": still merged.
    later = issue_comment_event(
        "created",
        comment(602, "Shipped.", "octocat", "2024-05-03T09:00:00Z"),
        state="closed",
        updated_at="2024-05-03T09:00:00Z",
        **as_issue,
    )
    state = merge_event(state, "issue_comment", later)
    assert state["state"] == "merged"

    title, text, metadata = render_item(state)
    assert title == "Add the Lyon per diem"
    assert text.startswith(
        "# Add the Lyon per diem\n\nPull request #7 in acme/handbook · merged · by @hubot"
        " · labels: docs · opened 2024-05-02 09:00 UTC\n\nAdds the missing row.\n\nFixes #42"
    )
    assert "## Comments" in text
    headings = [line for line in text.splitlines() if line.startswith("### ")]
    assert headings == [
        "### mona — 2024-05-02 09:30 UTC",
        "### mona — 2024-05-02 09:40 UTC (on `travel/per-diem.md`)",
        "### grace — 2024-05-02 09:50 UTC (review: approved)",
        "### octocat — 2024-05-03 09:00 UTC",
    ]
    assert "Typo: 'Lyion'." in text and "Please add Marseille too." in text
    assert metadata == {
        "repo": "acme/handbook",
        "kind": "pull",
        "number": 7,
        "state": "merged",
        "url": "https://github.example.com/acme/handbook/pull/7",
        "author": "hubot",
        "labels": ["docs"],
    }


def test_closed_unmerged_pull_request_is_closed() -> None:
    state = merge_event(
        None,
        "pull_request",
        {
            "action": "closed",
            "number": 9,
            "repository": REPO,
            "pull_request": pull_request(9, state="closed"),
        },
    )
    assert state["state"] == "closed"


def test_render_issue_without_comments_and_in_time_order() -> None:
    plain = merge_event(None, "issues", issues_event("opened", body="  ", labels=()))
    title, text, metadata = render_item(plain)
    assert text == (
        "# Travel policy: per diem unclear\n\n"
        "Issue #42 in acme/handbook · open · by @octocat · opened 2024-05-01 09:00 UTC\n"
    )
    assert metadata["labels"] == [] and metadata["kind"] == "issue" and metadata["state"] == "open"

    # Deliveries out of order still render in the order the comments were written.
    late, early = (
        comment(2, "second words", "b", "2024-05-01T12:00:00Z"),
        comment(1, "first words", "a", "2024-05-01T10:00:00Z"),
    )
    state = apply(
        [
            ("issue_comment", issue_comment_event("created", late)),
            ("issue_comment", issue_comment_event("created", early)),
        ],
        plain,
    )
    assert state is not None
    _, text, _ = render_item(state)
    assert text.index("first words") < text.index("second words")
    assert text.endswith(
        "## Comments\n\n### a — 2024-05-01 10:00 UTC\n\nfirst words\n\n"
        "### b — 2024-05-01 12:00 UTC\n\nsecond words\n"
    )
