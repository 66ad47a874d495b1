"""GitHub (and GitHub Enterprise) webhooks: signature check, push events, and issues/PRs as documents."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from appliance.errors import InvalidInput, Unauthorized

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_ISSUE_EVENTS = {"issues", "issue_comment"}
_PULL_EVENTS = {"pull_request", "pull_request_review", "pull_request_review_comment"}
KINDS = ("issue", "pull")
# Each comment kind has its own id space on GitHub, so the kind is part of the key.
_COMMENT_KINDS = {
    "issue_comment": "comment",
    "pull_request_review": "review",
    "pull_request_review_comment": "review_comment",
}


def verify_signature(
    secret: bytes, body: bytes, signature_256: str | None, signature_sha1: str | None = None
) -> None:
    """Checks X-Hub-Signature-256 (HMAC-SHA256 of the raw body) in constant time; raises Unauthorized."""
    if not secret:
        raise Unauthorized("no webhook secret is configured; unsigned deliveries are not accepted")
    if not signature_256:
        if signature_sha1:
            raise Unauthorized("X-Hub-Signature-256 missing (SHA-1 signatures are not accepted)")
        raise Unauthorized("X-Hub-Signature-256 missing: set a secret on the GitHub webhook")
    match = _SIGNATURE.fullmatch(signature_256.strip())
    if match is None:
        raise Unauthorized("X-Hub-Signature-256 malformed: expected 'sha256=' and 64 hex digits")
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match.group(1).lower()):
        raise Unauthorized("X-Hub-Signature-256 does not match the body (wrong secret or altered delivery)")


def parse_payload(body: bytes) -> dict[str, Any]:
    """The delivery's JSON object, sent as application/json or as a form with a `payload=` field."""
    text = body.lstrip()
    if text.startswith(b"payload="):
        try:
            fields = parse_qs(text.decode("utf-8"), strict_parsing=True, max_num_fields=16)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidInput(f"webhook form body is not valid: {exc}") from None
        if len(fields.get("payload", [])) != 1:
            raise InvalidInput("webhook form body must have exactly one 'payload' field")
        text = fields["payload"][0].encode("utf-8")
    try:
        payload = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"webhook body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInput("webhook body must be a JSON object")
    return payload


def _field(payload: dict[str, Any], *path: str) -> Any:
    value: Any = payload
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise InvalidInput(f"webhook payload lacks {'.'.join(path)}")
        value = value[key]
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class PushEvent:
    repo: str
    name: str
    ref: str
    branch: str | None
    after: str
    deleted: bool
    clone_urls: tuple[str, ...]


def push_event(payload: dict[str, Any]) -> PushEvent:
    """The parts of a `push` delivery a git source needs: which repository, which branch, which commit.
    `branch` is None for tag pushes; `clone_urls` (clone, ssh, git, html) match a configured remote."""
    repo = _field(payload, "repository", "full_name")
    ref = _field(payload, "ref")
    after = _field(payload, "after")
    if not (isinstance(repo, str) and isinstance(ref, str) and isinstance(after, str)):
        raise InvalidInput("push payload has a malformed repository.full_name, ref or after")
    repository = payload["repository"]
    urls = [repository.get(key) for key in ("clone_url", "ssh_url", "git_url", "html_url")]
    return PushEvent(
        repo=repo,
        name=_text(repository.get("name")) or repo.rsplit("/", 1)[-1],
        ref=ref,
        branch=ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None,
        after=after,
        deleted=bool(payload.get("deleted")) or set(after) == {"0"},
        clone_urls=tuple(dict.fromkeys(u for u in urls if isinstance(u, str) and u)),
    )


def item_key(event: str, payload: dict[str, Any]) -> tuple[str, str, int] | None:
    """(repository full name, "issue" | "pull", number) of the issue or pull request a delivery is about;
    None for events that are not indexed."""
    if event not in _ISSUE_EVENTS and event not in _PULL_EVENTS:
        return None
    repo = _field(payload, "repository", "full_name")
    container = "issue" if event in _ISSUE_EVENTS else "pull_request"
    item = _field(payload, container)
    number = _field(payload, container, "number")
    if not isinstance(repo, str) or not isinstance(number, int) or isinstance(number, bool):
        raise InvalidInput(f"webhook payload has a malformed repository.full_name or {container}.number")
    # An issue_comment on a pull request arrives with an issue that carries a pull_request link.
    kind = "pull" if event in _PULL_EVENTS or item.get("pull_request") else "issue"
    return repo, kind, number


def source_id_for(repo: str, kind: str, number: int) -> str:
    if kind not in KINDS:
        raise InvalidInput(f"unknown GitHub item kind {kind!r}")
    return f"github:{repo}:{kind}:{number}"


def _instant(stamp: Any) -> datetime | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        instant = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def _not_older(new: Any, old: Any) -> bool:
    """Whether a snapshot stamped `new` may replace one stamped `old`. Deliveries can arrive out of order
    or twice, so an older snapshot never overwrites a newer one; equal stamps replace (idempotent)."""
    new_at, old_at = _instant(new), _instant(old)
    return old_at is None or new_at is None or new_at >= old_at


def _item_state(item: dict[str, Any], current: str) -> str:
    # A pull request seen through an issue_comment is an issue: its merge shows only as pull_request.merged_at.
    link = item.get("pull_request") if isinstance(item.get("pull_request"), dict) else {}
    if item.get("merged") or item.get("merged_at") or link.get("merged_at"):
        return "merged"
    if current == "merged":
        return "merged"  # a merged pull request cannot be reopened or unmerged
    return "closed" if item.get("state") == "closed" else "open"


def _empty_state(repo: str, kind: str, number: int) -> dict[str, Any]:
    return {
        "repo": repo,
        "kind": kind,
        "number": number,
        "title": "",
        "body": "",
        "state": "open",
        "author": "",
        "labels": [],
        "url": "",
        "created_at": "",
        "updated_at": "",
        "comments": {},
        "deleted_comments": [],
        "deleted": False,
    }


def _apply_item(state: dict[str, Any], item: dict[str, Any]) -> None:
    if not _not_older(item.get("updated_at"), state.get("updated_at")):
        return
    state.update(
        title=_text(item.get("title")),
        body=_text(item.get("body")),
        state=_item_state(item, state["state"]),
        author=_text((item.get("user") or {}).get("login")),
        labels=sorted(
            {_text(label.get("name")) for label in item.get("labels") or [] if isinstance(label, dict)} - {""}
        ),
        url=_text(item.get("html_url")),
        created_at=_text(item.get("created_at")) or state["created_at"],
        updated_at=_text(item.get("updated_at")) or state["updated_at"],
    )


def _comment_entry(event: str, comment: dict[str, Any]) -> dict[str, Any]:
    kind = _COMMENT_KINDS[event]
    body = _text(comment.get("body")).strip()
    entry: dict[str, Any] = {
        "author": _text((comment.get("user") or {}).get("login")),
        "body": body,
        "created_at": _text(comment.get("submitted_at" if kind == "review" else "created_at")),
        "updated_at": _text(comment.get("updated_at") or comment.get("submitted_at")),
        "kind": kind,
        "url": _text(comment.get("html_url")),
    }
    if kind == "review":
        entry["verdict"] = _text(comment.get("state")).lower().replace("_", " ")
    if kind == "review_comment":
        entry["path"] = _text(comment.get("path"))
    return entry


def _apply_comment(state: dict[str, Any], event: str, payload: dict[str, Any]) -> None:
    container = "review" if event == "pull_request_review" else "comment"
    comment = _field(payload, container)
    comment_id = _field(payload, container, "id")
    key = f"{_COMMENT_KINDS[event]}:{comment_id}"
    action = payload.get("action")
    if action == "deleted":
        state["comments"].pop(key, None)
        # A tombstone, so that a late "created" delivery cannot bring the comment back.
        state["deleted_comments"] = sorted(set(state["deleted_comments"]) | {key})
        return
    if key in state["deleted_comments"]:
        return
    entry = _comment_entry(event, comment)
    if entry["kind"] == "review" and not entry["body"] and entry["verdict"] in ("commented", "pending", ""):
        return  # a bare container of review comments, which arrive as their own events
    previous = state["comments"].get(key)
    if previous is None or _not_older(entry["updated_at"], previous.get("updated_at")):
        state["comments"][key] = entry


def merge_event(state: dict[str, Any] | None, event: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The stored state of one issue or pull request after a delivery, as a new JSON-ready dict:
    {repo, kind, number, title, body, state, author, labels, url, created_at, updated_at,
     comments: {"<comment|review|review_comment>:<id>": {author, body, created_at, updated_at, kind, url, ...}},
     deleted_comments, deleted}. Pure and idempotent; older snapshots never overwrite newer ones."""
    key = item_key(event, payload)
    if key is None:
        raise InvalidInput(f"GitHub event {event!r} is not about an issue or pull request")
    repo, kind, number = key
    if state is None:
        merged = _empty_state(repo, kind, number)
    else:
        if (state.get("repo"), state.get("kind"), state.get("number")) != key:
            raise InvalidInput(f"delivery for {repo} {kind} #{number} applied to another item's state")
        merged = copy.deepcopy(state)
        merged.setdefault("deleted_comments", [])
    item = payload["issue" if event in _ISSUE_EVENTS else "pull_request"]
    _apply_item(merged, item)
    if event in _COMMENT_KINDS:
        _apply_comment(merged, event, payload)
    elif event == "issues" and payload.get("action") in ("deleted", "transferred"):
        merged["deleted"] = True  # gone from this repository for good; deletion stays final
    return merged


def _when(stamp: str) -> str:
    instant = _instant(stamp)
    if instant is None:
        return stamp or "unknown date"
    return instant.strftime("%Y-%m-%d %H:%M %Z").strip()


def render_item(state: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(title, markdown text, metadata) of the document for one issue or pull request."""
    kind_name = "Pull request" if state["kind"] == "pull" else "Issue"
    title = state.get("title") or f"{kind_name} #{state['number']}"
    facts = [f"{kind_name} #{state['number']} in {state['repo']}", state["state"]]
    if state.get("author"):
        facts.append(f"by @{state['author']}")
    if state.get("labels"):
        facts.append("labels: " + ", ".join(state["labels"]))
    if state.get("created_at"):
        facts.append(f"opened {_when(state['created_at'])}")
    parts = [f"# {title}", " · ".join(facts)]
    if state.get("body", "").strip():
        parts.append(state["body"].strip())
    earliest = datetime.min.replace(tzinfo=UTC)
    comments = sorted(
        state.get("comments", {}).items(), key=lambda kv: (_instant(kv[1]["created_at"]) or earliest, kv[0])
    )
    if comments:
        parts.append("## Comments")
        for _, comment in comments:
            heading = f"### {comment['author'] or 'unknown'} — {_when(comment['created_at'])}"
            if comment["kind"] == "review":
                heading += f" (review: {comment.get('verdict') or 'commented'})"
            elif comment["kind"] == "review_comment" and comment.get("path"):
                heading += f" (on `{comment['path']}`)"
            parts.append(heading + ("\n\n" + comment["body"] if comment["body"] else ""))
    metadata = {
        "repo": state["repo"],
        "kind": state["kind"],
        "number": state["number"],
        "state": state["state"],
        "url": state.get("url", ""),
        "author": state.get("author", ""),
        "labels": list(state.get("labels", [])),
    }
    return title, "\n\n".join(parts) + "\n", metadata
