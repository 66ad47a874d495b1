"""Conversations: multi-turn chat history, owned by the key that started them."""

from __future__ import annotations

import uuid

import duckdb
import msgspec

from appliance.db.connection import Database
from appliance.db.keys import Principal
from appliance.errors import NotFound
from appliance.records import Citation, Conversation, Message


class ConversationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, principal: Principal, collections: list[str] | None, title: str = "") -> Conversation:
        conv_id = "conv_" + uuid.uuid4().hex[:20]
        self.db.write(
            "INSERT INTO conversations (id, key_id, collections, title) VALUES (?, ?, ?, ?)",
            [conv_id, principal.key_id, collections, title],
        )
        return self.get(principal, conv_id)

    def get(self, principal: Principal, conv_id: str, with_messages: bool = False) -> Conversation:
        row = self.db.fetchone(
            "SELECT id, key_id, collections, title, created_at FROM conversations WHERE id = ?", [conv_id]
        )
        # Another key's conversation looks exactly like a missing one.
        if row is None or (row[1] != principal.key_id and not principal.is_admin):
            raise NotFound(f"conversation {conv_id!r} does not exist")
        return Conversation(
            id=row[0],
            collections=row[2],
            title=row[3],
            created_at=row[4].isoformat(),
            messages=self.messages(conv_id) if with_messages else None,
        )

    def list(self, principal: Principal, limit: int = 50) -> list[Conversation]:
        rows = self.db.fetchall(
            """SELECT id, collections, title, created_at FROM conversations WHERE key_id = ?
               ORDER BY created_at DESC LIMIT ?""",
            [principal.key_id, limit],
        )
        return [
            Conversation(id=r[0], collections=r[1], title=r[2], created_at=r[3].isoformat()) for r in rows
        ]

    def messages(self, conv_id: str) -> list[Message]:
        rows = self.db.fetchall(
            """SELECT ordinal, role, content, citations, created_at FROM conversation_messages
               WHERE conversation_id = ? ORDER BY ordinal""",
            [conv_id],
        )
        return [
            Message(
                ordinal=r[0],
                role=r[1],
                content=r[2],
                citations=msgspec.json.decode(r[3], type=list[Citation]) if r[3] else [],
                created_at=r[4].isoformat(),
            )
            for r in rows
        ]

    def history(self, conv_id: str) -> list[tuple[str, str]]:
        return [(m.role, m.content) for m in self.messages(conv_id)]

    def append(self, conv_id: str, *messages: tuple[str, str, list | None]) -> None:
        """Append (role, content, citations) messages at the end, together: the two messages of a
        turn stay adjacent even when two turns of one conversation finish at the same moment.
        Citations are Citation records, or their JSON objects (a streamed answer's event)."""

        def work(cur) -> None:
            nxt = cur.execute(
                "SELECT coalesce(max(ordinal), -1) + 1 FROM conversation_messages WHERE conversation_id = ?",
                [conv_id],
            ).fetchone()[0]
            cur.executemany(
                "INSERT INTO conversation_messages (conversation_id, ordinal, role, content, citations) VALUES (?, ?, ?, ?, ?)",
                [
                    [conv_id, nxt + i, role, content, msgspec.json.encode(citations or []).decode()]
                    for i, (role, content, citations) in enumerate(messages)
                ],
            )

        for attempt in range(5):
            try:
                self.db.run_in_transaction(work)
                return
            except duckdb.ConstraintException:
                # Another turn took the same ordinals first: read the end again.
                if attempt == 4:
                    raise

    def delete(self, principal: Principal, conv_id: str) -> None:
        self.get(principal, conv_id)

        def work(cur) -> None:
            cur.execute("DELETE FROM conversation_messages WHERE conversation_id = ?", [conv_id])
            cur.execute("DELETE FROM conversations WHERE id = ?", [conv_id])

        self.db.run_in_transaction(work)
