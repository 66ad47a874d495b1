"""The sync and the async client against a live server: the same answers, the same ApiError for
problem details, OpenAI's envelope and transport failures, and both kinds of streams."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from appliance.client import ApiError, ApplianceClient, AsyncApplianceClient
from appliance.generate.citations import MARKER
from tests.conftest import TEST_MODEL_ENV, ServerProcess, free_port

HANDBOOK = [
    {"source_id": "travel.md", "text": "# Travel\n\nThe per diem in Europe is 75 EUR a day for meals."},
    {"source_id": "keys.md", "text": "# Keys\n\nRotate API keys every ninety days."},
]


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("client") / "data", env=TEST_MODEL_ENV).start()
    with ApplianceClient(server.url, server.key) as client:
        client.create_collection("handbook")
        accepted = client.submit_batch("handbook", HANDBOOK, wait=True)
        assert client.job(accepted["job_id"])["state"] == "succeeded"
    yield server
    server.stop()


@pytest.fixture
def chat(live) -> ServerProcess:
    """The live server once its chat model is loaded (streams need it)."""
    with ApplianceClient(live.url, live.key) as client:
        deadline = time.monotonic() + 120
        while (model := client.ready()["chat_model"])["state"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.2)
    assert model["state"] == "loaded", model
    return live


def run(coro):
    return asyncio.run(coro)


async def _async(url: str, key: str, work):
    async with AsyncApplianceClient(url, key) as client:
        return await work(client)


def test_both_clients_give_the_same_answers(live):
    with ApplianceClient(live.url, live.key) as sync:
        hits = sync.search("per diem in Europe", ["handbook"], top_k=2)["hits"]
        docs = sync.documents("handbook")["documents"]
        jobs = sync.jobs(limit=5)

    async def same(client: AsyncApplianceClient):
        return (
            (await client.search("per diem in Europe", ["handbook"], top_k=2))["hits"],
            (await client.documents("handbook"))["documents"],
            await client.jobs(limit=5),
        )

    async_hits, async_docs, async_jobs = run(_async(live.url, live.key, same))
    assert hits[0]["source_id"] == "travel.md"
    assert [h["chunk_id"] for h in hits] == [h["chunk_id"] for h in async_hits]
    assert {d["source_id"] for d in docs} == {d["source_id"] for d in async_docs} == {"travel.md", "keys.md"}
    assert [j["id"] for j in jobs] == [j["id"] for j in async_jobs]

    with ApplianceClient(live.url, live.key) as sync:
        document = sync.document(hits[0]["document_id"], chunks=True)
        job = sync.job(jobs[-1]["id"], items=True)
    assert "75 EUR" in document["chunks"][0]["text"]
    assert job["items"] and all("source_id" in item for item in job["items"])


def test_unwrapped_answers(live):
    with ApplianceClient(live.url, live.key) as sync:
        # Lists, not the {"sources": ...} and {"files": ...} envelopes they came in.
        assert isinstance(sync.sources(), list) and isinstance(sync.quarantine("handbook"), list)
        chat = sync.chat_models()
    assert chat and all("chat" in m["capabilities"] for m in chat)


def _failure(work) -> ApiError:
    with pytest.raises(ApiError) as caught:
        work()
    return caught.value


async def _afailure(coro) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await coro
    return caught.value


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_error_answers_become_one_api_error(live, flavour):
    """Problem details (404, 409, 401) and OpenAI's envelope (401 on /v1) read the same way."""

    def fail(key: str, name: str, *args) -> ApiError:
        if flavour == "sync":
            with ApplianceClient(live.url, key) as client:
                return _failure(lambda: getattr(client, name)(*args))
        return run(_async(live.url, key, lambda client: _afailure(getattr(client, name)(*args))))

    missing = fail(live.key, "document", "no-such-document")
    assert (missing.status, missing.title, missing.missing) == (404, "Not found", True)
    assert missing.detail and "{" not in missing.detail
    taken = fail(live.key, "create_collection", "handbook")
    assert taken.status == 409 and "handbook" in taken.detail
    refused = fail("apk_wrong", "collections")
    assert (refused.status, refused.title) == (401, "Unauthorized") and "key" in refused.detail
    envelope = fail("apk_wrong", "chat_models")
    assert (envelope.status, envelope.title) == (401, "Unauthorized")
    assert "key" in envelope.detail and "error" not in envelope.detail  # the message, not the envelope


def test_ready_answers_whatever_the_key(live):
    with ApplianceClient(live.url, "apk_wrong") as sync:
        assert sync.ready()["status"] == "ready"
    assert run(_async(live.url, "apk_wrong", lambda c: c.ready()))["status"] == "ready"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_transport_failures_say_what_to_check(silent_server):
    dead = f"http://127.0.0.1:{free_port()}"
    with ApplianceClient(dead, "apk_any") as sync:
        errors = [_failure(sync.collections), _failure(lambda: list(sync.ask("anything")))]

    async def dead_async(client: AsyncApplianceClient):
        async def drain():
            async for _ in client.ask("anything"):
                pass

        return [await _afailure(client.collections()), await _afailure(drain())]

    errors += run(_async(dead, "apk_any", dead_async))
    for exc in errors:
        assert (exc.status, exc.title, exc.unreachable) == (0, "Server unreachable", True)
        assert dead in exc.detail and "appliance serve" in exc.detail

    with ApplianceClient(silent_server, "apk_any", timeout=0.5) as sync:
        slow = _failure(sync.stats)

    async def slow_async():
        async with AsyncApplianceClient(silent_server, "apk_any", timeout=0.5) as client:
            return await _afailure(client.stats())

    for exc in (slow, run(slow_async())):
        assert (exc.status, exc.title) == (0, "Timeout") and silent_server in exc.detail


def _check_answer_stream(events: list[dict]) -> None:
    kinds = [e["type"] for e in events]
    assert set(kinds) <= {"queue", "sources", "token", "answer"}, kinds
    assert kinds[-1] == "answer" and "token" in kinds and kinds.index("sources") < kinds.index("token")
    # The last event carries the verified answer: the streamed text with its citations checked
    # sentence by sentence (markers may move), so every sentence it keeps was streamed.
    streamed = " ".join(MARKER.sub("", "".join(e["text"] for e in events if e["type"] == "token")).split())
    final = events[-1]
    assert final["answer"].strip() and final["verifier"]
    for sentence in final["sentences"]:
        assert sentence["text"] in streamed, (sentence, streamed)


def test_both_clients_stream_a_cited_answer(chat):
    live = chat
    with ApplianceClient(live.url, live.key) as sync:
        _check_answer_stream(list(sync.ask("What is the per diem in Europe?", ["handbook"])))

    async def ask(client: AsyncApplianceClient):
        return [e async for e in client.ask("What is the per diem in Europe?", ["handbook"])]

    _check_answer_stream(run(_async(live.url, live.key, ask)))


def test_a_stream_refused_before_it_starts_raises(live):
    with ApplianceClient(live.url, live.key) as sync:
        refused = _failure(lambda: list(sync.ask("anything", ["no-such-collection"])))

    async def ask(client: AsyncApplianceClient):
        async def drain():
            async for _ in client.ask("anything", ["no-such-collection"]):
                pass

        return await _afailure(drain())

    for exc in (refused, run(_async(live.url, live.key, ask))):
        assert exc.status == 404 and "no-such-collection" in exc.detail


def test_a_conversation_streams_through_both_clients(chat):
    live = chat
    with ApplianceClient(live.url, live.key) as sync:
        conversation = sync.create_conversation(["handbook"], "travel")
        first = list(sync.send_message(conversation["id"], "What is the per diem in Europe?"))

    async def follow_up(client: AsyncApplianceClient):
        events = [e async for e in client.send_message(conversation["id"], "And how often are keys rotated?")]
        return events, await client.conversation(conversation["id"])

    second, stored = run(_async(live.url, live.key, follow_up))
    assert first[-1]["type"] == "answer" and second[-1]["type"] == "answer"
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant", "user", "assistant"]
    assert stored["messages"][2]["content"] == "And how often are keys rotated?"


def test_upload_reads_the_file_here(live, tmp_path):
    note = tmp_path / "lunch.md"
    note.write_text("The canteen serves lunch from noon until two.")
    with ApplianceClient(live.url, live.key) as sync:
        accepted = sync.upload("handbook", note)
        unreadable = _failure(lambda: sync.upload("handbook", tmp_path / "missing.md"))
    assert accepted["job_id"] and accepted["document_ids"]
    assert (unreadable.status, unreadable.title) == (
        -1,
        "Cannot read file",
    ) and "missing.md" in unreadable.detail

    async def again(client: AsyncApplianceClient):
        return await client.upload("handbook", note, source_id=str(note))

    assert run(_async(live.url, live.key, again))["document_ids"] == accepted["document_ids"]
