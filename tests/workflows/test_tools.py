"""Built-in tools that call the model (through the gate), tool timeouts, and approvals that expire."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from appliance.workflows.llm import RuntimeLLM
from tests.workflows.harness import Harness
from tests.workflows.scripted import ScriptedRuntime

DIGEST = """
kind: Workflow
name: digest
budget: {tokens: BUDGET}
steps:
  - {id: found, tool: builtin.search, with: {query: ships}}
  - {id: summary, tool: builtin.summarize_context, with: {hits: "${steps.found.output.hits}", max_words: 6}}
  - id: fields
    tool: builtin.extract_fields
    with:
      text: "${steps.summary.output.summary}"
      schema: {type: object, properties: {ship: {type: string}, year: {type: integer}}, required: [ship, year]}
outputs: {summary: "${steps.summary.output}", record: "${steps.fields.output.record}"}
"""


def _harness(tmp_path, replies):
    runtime = ScriptedRuntime(replies)
    h = Harness(tmp_path, llm=RuntimeLLM(lambda model: runtime))
    h.services.corpus = {"fleet": ["The Endeavour sailed in 1768.", "It carried Cook."]}
    return h, runtime


def test_summaries_keep_their_sources_and_records_match_their_schema(tmp_path):
    h, runtime = _harness(
        tmp_path,
        ["Endeavour sailed 1768 carrying Cook onwards and beyond", '{"ship": "Endeavour", "year": 1768}'],
    )
    h.apply(DIGEST.replace("BUDGET", "10000"))
    run_id, outcome = h.run("digest")
    assert outcome.state == "succeeded", outcome.error
    assert outcome.outputs["summary"] == {
        "summary": "Endeavour sailed 1768 carrying Cook onwards",
        "chunk_ids": [0, 1],
    }
    assert outcome.outputs["record"] == {"ship": "Endeavour", "year": 1768}
    assert "The Endeavour sailed in 1768." in runtime.prompts[0]
    usage = h.store.latest_usage(run_id)
    assert usage["tokens"] > 0


def test_a_record_outside_its_schema_fails_the_step(tmp_path):
    h, _ = _harness(tmp_path, ["a summary", '{"ship": "Endeavour", "year": "long ago"}'])
    h.apply(DIGEST.replace("BUDGET", "10000"))
    run_id, outcome = h.run("digest")
    assert outcome.state == "failed"
    assert "year" in outcome.error and h.steps(run_id)["fields"]["state"] == "failed"


def test_a_tool_s_own_model_calls_draw_on_the_run_budget(tmp_path):
    h, runtime = _harness(tmp_path, ["word " * 50, '{"ship": "x", "year": 1}'])
    h.apply(DIGEST.replace("BUDGET", "40"))
    run_id, outcome = h.run("digest")
    assert outcome.state == "failed" and "tokens" in outcome.error
    assert len(runtime.prompts) == 1  # the extraction's call was never made
    assert h.steps(run_id)["summary"]["state"] == "succeeded"


def test_a_slow_tool_times_out_and_its_fallback_runs(tmp_path):
    h = Harness(tmp_path)
    h.apply(
        """
kind: Tool
name: slow
type: builtin
builtin: builtin.sleep
timeout_s: 0.05
fallback: builtin.echo
input_schema: {type: object, properties: {seconds: {type: number}, text: {type: string}}}
output_schema: {type: object}
""",
        """
kind: Workflow
name: hurry
steps:
  - {id: wait, tool: slow, with: {seconds: 5, text: gave up}}
outputs: {out: "${steps.wait.output}"}
""",
    )
    run_id, outcome = h.run("hurry")
    assert outcome.state == "degraded"
    assert outcome.outputs == {"out": {"text": "gave up"}}
    assert "timed out" in h.store.run_row(run_id)["flags"]


def test_an_expired_approval_takes_its_default_or_fails_the_run(tmp_path):
    h = Harness(tmp_path)
    template = """
kind: Workflow
name: NAME
steps:
  - id: ok
    approval: {expires_in_s: 3600, on_expiry: EXPIRY, DEFAULT schema: {type: boolean}}
outputs: {ok: "${steps.ok.output}"}
"""
    h.apply(
        template.replace("NAME", "lenient")
        .replace("EXPIRY", "continue")
        .replace("DEFAULT", "default: false,"),
        template.replace("NAME", "strict").replace("EXPIRY", "fail").replace("DEFAULT", ""),
    )
    outcomes = {}
    for name in ("lenient", "strict"):
        run_id, waiting = h.run(name)
        assert waiting.state == "waiting"
        past = datetime.now(UTC) - timedelta(seconds=1)
        h.store.db.write(
            "UPDATE workflow_approvals SET expires_at = ? WHERE id = ?", [past, waiting.approvals[0]]
        )
        outcomes[name] = h.resume(run_id)
        assert h.store.approval_row(waiting.approvals[0])["state"] == "expired"
    assert (outcomes["lenient"].state, outcomes["lenient"].outputs) == ("succeeded", {"ok": False})
    assert outcomes["strict"].state == "failed" and "expired" in outcomes["strict"].error


def test_the_answer_tool_s_model_tokens_count_against_the_budget(tmp_path):
    h = Harness(tmp_path)
    h.services.corpus = {"fleet": ["The Endeavour sailed in 1768."]}
    h.apply(
        """
kind: Workflow
name: twice
budget: {tokens: 5}
steps:
  - {id: first, tool: builtin.answer_with_citations, with: {question: when}}
  - {id: second, tool: builtin.answer_with_citations, with: {question: again}}
"""
    )
    run_id, outcome = h.run("twice")
    assert outcome.state == "failed" and "tokens 7 of 5" in outcome.error
    assert len(h.services.searched) == 1  # the second answer was never asked for
    assert h.store.latest_usage(run_id)["tokens"] == 7


def test_find_similar_keeps_chunk_ids_and_leaves_out_its_source(tmp_path):
    h = Harness(tmp_path)
    h.services.corpus = {"fleet": ["The Endeavour sailed in 1768.", "It carried Cook.", "Banks came too."]}
    h.apply(
        """
kind: Workflow
name: like
inputs: {type: object, properties: {chunk: {type: integer}, text: {type: string}}}
steps:
  - {id: similar, tool: builtin.find_similar, with: {chunk_id: "${inputs.chunk}", text: "${inputs.text}", top_k: 2}}
outputs: {similar: "${steps.similar.output}"}
"""
    )
    _, outcome = h.run("like", {"chunk": 1})
    assert outcome.state == "succeeded", outcome.error
    similar = outcome.outputs["similar"]
    assert similar["source"] == {"chunk_id": 1, "document_id": "fleet-1"}
    assert [(hit["chunk_id"], hit["document_id"]) for hit in similar["hits"]] == [
        (0, "fleet-0"),
        (2, "fleet-2"),
    ]
    _, outcome = h.run("like", {"text": "ships"})
    assert outcome.outputs["similar"]["source"] is None
    assert [hit["chunk_id"] for hit in outcome.outputs["similar"]["hits"]] == [0, 1]
    _, outcome = h.run("like", {"chunk": 1, "text": "ships"})
    assert outcome.state == "failed" and "give chunk_id or text, one of them" in outcome.error
    # A chunk the key cannot read is like one that does not exist: nothing of it is searched for.
    h.services.readable = ["other"]
    searched = len(h.services.searched)
    _, outcome = h.run("like", {"chunk": 1})
    assert outcome.state == "failed" and "no such chunk: 1" in outcome.error
    assert len(h.services.searched) == searched


def test_insights_keep_only_the_chunk_ids_that_exist_and_were_given(tmp_path):
    reply = {
        "insights": [
            {"insight": "The Endeavour  sailed in 1768.", "chunk_ids": [0, 0]},
            {"insight": "Cook was aboard.", "chunk_ids": [1, 99]},
            {"insight": "A forged source.", "chunk_ids": [7]},
            {"insight": "Nothing supports this.", "chunk_ids": []},
        ]
    }
    h, runtime = _harness(tmp_path, [json.dumps(reply)])
    h.apply(
        """
kind: Workflow
name: insights
steps:
  - {id: found, tool: builtin.search, with: {query: ships}}
  - id: key
    tool: builtin.extract_insights
    with: {hits: "${steps.found.output.hits}", focus: the voyage, max_insights: 4}
outputs: {key: "${steps.key.output}"}
"""
    )
    run_id, outcome = h.run("insights")
    assert outcome.state == "succeeded", outcome.error
    key = outcome.outputs["key"]
    assert key["insights"] == [
        {"insight": "The Endeavour sailed in 1768.", "chunk_ids": [0]},
        {"insight": "Cook was aboard.", "chunk_ids": [1]},
    ]
    assert key["chunk_ids"] == [0, 1]
    assert {(p["insight"], p["chunk_id"]) for p in key["problems"]} == {(1, 99), (2, 7), (2, None), (3, None)}
    assert "[0] The Endeavour sailed in 1768." in runtime.prompts[0] and "the voyage" in runtime.prompts[0]
    assert h.store.latest_usage(run_id)["tokens"] > 0  # the model call went through the gate


def test_insights_from_a_reply_that_is_not_json_fail_the_step(tmp_path):
    h, _ = _harness(tmp_path, ["The voyage was long."])
    h.apply(
        """
kind: Workflow
name: insights
steps:
  - {id: found, tool: builtin.search, with: {query: ships}}
  - {id: key, tool: builtin.extract_insights, with: {hits: "${steps.found.output.hits}"}}
"""
    )
    _, outcome = h.run("insights")
    assert outcome.state == "failed" and "not a JSON object with a list of insights" in outcome.error
