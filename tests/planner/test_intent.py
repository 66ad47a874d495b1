"""`appliance plan chat`: the intent read from a scripted conversation through the appliance's own chat
path (constrained JSON output); a number the user never said is never kept but asked for. First with a
scripted model that invents numbers (exactly what the guard must catch), then with the real SmolLM2."""

from __future__ import annotations

import json

import pytest

from appliance.cli import main
from appliance.planner.intent import guard, missing, numbers_said, question
from tests.inprocess import InProcessServer, echo_appliance
from tests.workflows.scripted import ConstrainedScriptedRuntime as ConstrainedScripted

pytest.importorskip("llama_cpp")


def nulls(**given) -> str:
    fields = (
        "task",
        "users",
        "rate",
        "prompt_tokens",
        "output_tokens",
        "p95_ttft_ms",
        "tokens_per_s_per_user",
        "budget_usd_month",
        "priority",
    )
    return json.dumps({f: given.get(f) for f in fields})


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    app = echo_appliance(tmp_path_factory.mktemp("plan-chat") / "data")
    server = InProcessServer(app).start()
    yield server
    server.stop()
    app.close()


def test_numbers_are_kept_only_as_the_user_said_them():
    assert numbers_said(["40 users, 1,200 tokens, 2.5 s, 10k a day"]) == [40.0, 1200.0, 2.5, 10000.0]
    intent, dropped = guard(
        {"task": "rag", "users": 40, "p95_ttft_ms": 2500, "prompt_tokens": 512, "rate": "fast"},
        ["answers from our wiki for 40 people, first words within 2.5 seconds"],
    )
    assert intent["task"] == "rag" and intent["users"] == 40 and intent["p95_ttft_ms"] == 2500.0
    assert intent["prompt_tokens"] is None and intent["rate"] is None
    assert dropped == [
        "rate='fast': not a positive number",
        "prompt_tokens=512: not a number of the conversation",
    ]
    needed, optional = missing(intent)
    assert needed == [] and optional == ["prompt_tokens", "output_tokens"]
    assert "prompt length" in question(needed, optional)
    assert question(["task", "users or rate"], []).startswith("What is it for")


def test_an_invented_number_is_dropped_and_asked_for(served, capsys):
    model = ConstrainedScripted(
        [
            # The user gives no number; the model invents 50 users and an 800-token prompt.
            nulls(task="chat", users=50, prompt_tokens=800),
            # Now the user says 12; the model also claims a 3 s limit nobody asked for.
            nulls(task="chat", users=12, p95_ttft_ms=3000),
            nulls(task="chat", users=12, prompt_tokens=300, output_tokens=150),
        ]
    )
    served.app.models.serve(model)
    argv = ["plan", "chat", "--url", served.url, "--key", served.key, "--json"]
    turns = [
        "--say",
        "A support chat assistant for our team",
        "--say",
        "about 12 people at the same time",
        "--say",
        "prompts of 300 tokens, answers of 150",
    ]
    assert main([*argv, *turns]) == 0
    out = json.loads(capsys.readouterr().out)
    intent = out["intent"]
    assert (intent["task"], intent["users"], intent["prompt_tokens"], intent["output_tokens"]) == (
        "chat",
        12,
        300,
        150,
    )
    assert intent["p95_ttft_ms"] is None and intent["complete"] and intent["model"] == "scripted"
    # The questions the user saw: the invented users were asked for, then the optional numbers.
    asked = [m["content"] for m in out["messages"] if m["role"] == "assistant"]
    assert "how many users" in asked[0].lower() and "prompt length" in asked[1]
    # Every request went through the chat path with the schema in the prompt's system message.
    assert len(model.prompts) == 3 and all("never guess or assume a number" in p for p in model.prompts)


def test_a_conversation_without_the_load_ends_without_one(served, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # the user leaves instead of answering
    served.app.models.serve(ConstrainedScripted([nulls(task="code", users=8, rate=2.0)]))
    code = main(
        ["plan", "chat", "--url", served.url, "--key", served.key, "--json", "--say", "a code helper"]
    )
    captured = capsys.readouterr()
    assert code == 1 and "missing users or rate: nothing was guessed" in captured.err
    draft = json.loads(captured.out)["intent"]
    assert draft["users"] is None and draft["rate"] is None and draft["task"] == "code"
    assert sorted(draft["dropped"]) == [
        "rate=2.0: not a number of the conversation",
        "users=8: not a number of the conversation",
    ]


def test_the_small_model_reads_a_conversation_and_invents_nothing(served):
    import httpx

    served.app.models.load("SmolLM2-135M-Instruct")
    assert served.app.models.health()["backend"] == "llama.cpp"
    headers = {"Authorization": f"Bearer {served.key}"}

    # One reading of a three-turn conversation (a generation costs seconds on this box): the user
    # said one number, 30; the prompt and answer lengths and the latency limit stay missing and asked.
    messages = [
        {"role": "user", "content": "We want a chat assistant for the support team."},
        {"role": "assistant", "content": "How many users at the same time, or how many requests per second?"},
        {"role": "user", "content": "Around 30 people will use it at the same time."},
    ]
    r = httpx.post(
        f"{served.url}/api/v1/plan/intent", json={"messages": messages}, headers=headers, timeout=300
    )
    assert r.status_code == 200, r.text
    draft = r.json()
    numbers = ("users", "rate", "prompt_tokens", "output_tokens", "p95_ttft_ms", "tokens_per_s_per_user")
    kept = [draft[n] for n in numbers if draft[n] is not None]
    assert all(v == 30 for v in kept), draft  # whatever the model wrote, only the number that was said
    assert all(
        why.endswith("not a number of the conversation") or ": said, but not about the " in why
        for why in draft["dropped"]
    ), draft
    for name in ("prompt_tokens", "output_tokens", "p95_ttft_ms"):
        assert draft[name] is None and name in draft["optional_missing"]
    assert draft["model"] == "SmolLM2-135M-Instruct"
    assert draft["question"] is not None
