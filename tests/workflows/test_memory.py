"""Long-term memory per API key over a real DuckDB: off by default, stored only after success,
recalled by relevance into `${memory}` and the trace, never across keys, deletable; bad config refused."""

from __future__ import annotations

import pytest

from appliance.workflows.documents import DocumentError, parse
from appliance.workflows.engine import MEMORY_STEP
from appliance.workflows.llm import RuntimeLLM
from tests.workflows.harness import Harness
from tests.workflows.scripted import ScriptedRuntime

ASK = """
kind: Workflow
name: ask
inputs: {{type: object, properties: {{q: {{type: string}}, fail: {{type: boolean}}}}, required: [q]}}
{memory}
steps:
  - id: boom
    when: "${{inputs.fail}}"
    tool: builtin.fail
    with: {{message: told to fail}}
  - id: say
    tool: builtin.echo
    with: {{text: "answer about ${{inputs.q}}"}}
outputs: {{text: "${{steps.say.output.text}}"{recalled}}}
"""
WITH_MEMORY = ASK.format(memory="memory: {enabled: true, top_k: 2}", recalled=', recalled: "${memory}"')
WITHOUT = ASK.format(memory="", recalled="")


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def test_memory_is_off_by_default_and_nothing_is_stored(h):
    h.apply(WITHOUT)
    run_id, out = h.run("ask", {"q": "volcanoes"})
    assert out.state == "succeeded"
    assert h.store.memories(None) == []
    assert MEMORY_STEP not in h.steps(run_id)


def test_a_succeeded_run_is_remembered_and_recalled_by_relevance(h):
    h.apply(WITH_MEMORY)
    for q in ("volcanoes of iceland", "tax forms for 2025", "glaciers of iceland"):
        assert h.run("ask", {"q": q})[1].state == "succeeded"
    failed_id, failed = h.run("ask", {"q": "iceland fishing quotas", "fail": True})
    assert failed.state == "failed"
    stored = h.store.memories(h.key_id, "ask")
    assert len(stored) == 3  # the failed run left none
    assert failed_id not in {m.run_id for m in stored}
    assert all("answer about" in m.summary and "inputs:" in m.summary for m in stored)

    run_id, out = h.run("ask", {"q": "iceland"})
    recalled = out.outputs["recalled"]
    assert len(recalled) == 2  # top_k
    assert {r["summary"].split('"q":"')[1].split('"')[0] for r in recalled} == {
        "volcanoes of iceland",
        "glaciers of iceland",
    }
    assert all(r["score"] > 0 for r in recalled)
    trace = h.steps(run_id)[MEMORY_STEP]  # what the run was given is in its trace
    assert trace["state"] == "succeeded" and trace["kind"] == "memory"

    # Nothing shares a word with the query: nothing is recalled (no unrelated hints).
    assert h.run("ask", {"q": "zebra"})[1].outputs["recalled"] == []


def test_a_resumed_run_reads_the_same_memories_back(h):
    h.apply(WITH_MEMORY)
    h.run("ask", {"q": "iceland"})
    run_id = h.start("ask", {"q": "iceland"})
    first = h.resume(run_id, keep_going=lambda: False)  # recalls, then is interrupted before a step
    assert first.state == "interrupted"
    h.run("ask", {"q": "iceland again"})  # a newer memory arrives meanwhile
    again = h.resume(run_id)
    assert again.state == "succeeded"
    assert len(again.outputs["recalled"]) == 1  # the recall recorded before, not a new one


def test_one_key_never_recalls_or_lists_another_keys_memories(h):
    h.apply(WITH_MEMORY)
    h.key_id = "key_a"
    h.run("ask", {"q": "secret plans of iceland"})
    h.key_id = "key_b"
    out = h.run("ask", {"q": "secret plans of iceland"})[1]
    assert out.outputs["recalled"] == []
    assert [m.key_id for m in h.store.memories("key_b")] == ["key_b"]
    assert h.store.forget("key_b") == 1
    assert [m.key_id for m in h.store.memories(None)] == ["key_a"]  # b's delete left a's alone
    h.key_id = "key_a"
    assert len(h.run("ask", {"q": "iceland"})[1].outputs["recalled"]) == 1


def test_deleted_memories_are_not_recalled(h):
    h.apply(WITH_MEMORY)
    h.run("ask", {"q": "iceland"})
    assert h.store.forget(h.key_id, "other") == 0
    assert h.store.forget(h.key_id, "ask") == 1
    assert h.run("ask", {"q": "iceland"})[1].outputs["recalled"] == []


@pytest.mark.parametrize(
    ("memory", "path"),
    [
        ("memory: {enabled: yes-please}", "memory.enabled"),
        ("memory: {enabled: true, top_k: 0}", "memory.top_k"),
        ("memory: {enabled: true, top_k: 500}", "memory.top_k"),
        ("memory: {enabled: true, recall: all}", "memory"),
        ("memory: {top_k: 3}", "memory"),
        ("memory: true", "memory"),
    ],
)
def test_bad_memory_config_is_rejected_with_its_path(h, memory, path):
    with pytest.raises(DocumentError) as err:
        h.apply(ASK.format(memory=memory, recalled=""))
    assert str(err.value).split(":")[1].strip().startswith(path), str(err.value)


def test_a_reference_to_memory_without_memory_is_rejected(h):
    with pytest.raises(DocumentError, match=r"outputs.recalled.*keeps no memory"):
        h.apply(ASK.format(memory="", recalled=', recalled: "${memory}"'))
    assert parse(WITH_MEMORY, "ok.yaml")  # the same document with memory declared parses


SCRIBE = """
kind: Agent
name: scribe
instructions: Answer in one line.
memory: {enabled: true, top_k: 1}
"""
CONSULT = """
kind: Workflow
name: consult
inputs: {type: object, properties: {q: {type: string}}, required: [q]}
steps:
  - id: ask
    agent: scribe
    with: {prompt: "${inputs.q}"}
outputs: {text: "${steps.ask.output.text}"}
"""


def test_an_agent_with_memory_is_given_its_relevant_past_calls(tmp_path):
    runtime = ScriptedRuntime(["the ferry leaves at nine", "the ferry still leaves at nine", "no idea"])
    h = Harness(tmp_path, llm=RuntimeLLM(lambda model: runtime))
    try:
        h.apply(SCRIBE, CONSULT)
        h.run("consult", {"q": "when does the ferry leave?"})
        run_id, out = h.run("consult", {"q": "ferry times"})
        assert out.state == "succeeded", out.error
        # The second call's task carries the first call's question and answer; the trace has the recall.
        assert "Notes from your earlier runs" not in runtime.prompts[0]
        assert "when does the ferry leave?" in runtime.prompts[1] and "leaves at nine" in runtime.prompts[1]
        recall = h.steps(run_id)["ask/memory"]
        assert recall["kind"] == "memory" and recall["parent"] == "ask"
        assert [m.workflow for m in h.store.memories(h.key_id)] == ["agent:scribe", "agent:scribe"]
        h.key_id = "key_other"  # another key's agent starts with no notes
        h.run("consult", {"q": "ferry times"})
        assert "Notes from your earlier runs" not in runtime.prompts[2]
    finally:
        h.close()


def test_an_agents_bad_memory_config_is_rejected_with_its_path(h):
    with pytest.raises(DocumentError, match=r"memory\.top_k"):
        h.apply(SCRIBE.replace("top_k: 1", "top_k: -1"))
