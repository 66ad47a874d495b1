"""The example workflows shipped in data/workflows/: each file validates on its own (and all of them
together), and they run end to end in a real appliance: document-triage on the embedded SmolLM2 (its
records constrained to the schema), incident-assistant's hierarchy and approval on a scripted model,
research-and-cite's checked citations on a scripted model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.workflows.documents import parse
from appliance.workflows.library import validate_files
from tests.inprocess import echo_appliance, ingest
from tests.workflows.scripted import ScriptedRuntime

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "workflows"
FILES = sorted(EXAMPLES.glob("*.yaml"))
TRAVEL = (
    "# Travel policy\n\nEmployees travelling in Europe receive a per diem of 75 EUR a day for meals. "
    "Flights over six hours may be booked in business class by the travel office."
)
KEYS = "# Key rotation runbook\n\nRevoke a leaked API key at once and create a new one. Rotate keys every 90 days."


def test_three_examples_are_shipped_and_each_validates_alone_and_together():
    assert {f.stem for f in FILES} == {"research-and-cite", "document-triage", "incident-assistant"}
    every = []
    for path in FILES:
        docs = validate_files([(str(path), path.read_text())])
        assert any(d.kind == "Workflow" and d.name == path.stem for d in docs), path
        every.extend(docs)
    assert validate_files([(str(p), p.read_text()) for p in FILES])
    # Every agent of the examples runs on the served model, and every run has a budget.
    for doc in every:
        if doc.kind == "Agent":
            assert doc.body.get("model", "auto") == "auto"
        if doc.kind == "Workflow":
            assert doc.body["budget"]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    appliance = echo_appliance(tmp_path_factory.mktemp("examples") / "data")
    ingest(appliance, "handbook", {"travel": TRAVEL, "keys": KEYS})
    admin = appliance.access.system_scope()
    for path in FILES:
        appliance.workflows.apply(admin, parse(path.read_text(), path.name))
    yield appliance
    appliance.close()


def test_incident_assistant_plans_dispatches_asks_then_posts_once(app):
    plan = {
        "tasks": [
            {"agent": "incident-investigator", "prompt": "What does the runbook say about leaked keys?"},
            {"agent": "incident-writer", "prompt": "Advise the people whose key leaked."},
        ]
    }
    runtime = ScriptedRuntime(
        [
            json.dumps(plan),
            "Revoke the leaked key at once and create a new one (Key rotation runbook).",
            "Create a new key and stop using the old one.",
            "A leaked key was revoked; create a new key and update your clients.",
        ]
    )
    app.models.serve(runtime)
    admin = app.access.system_scope()
    run = app.workflows.start(admin, "incident-assistant", {"incident": "an API key leaked in a public repo"})
    waiting = app.workflows.wait(admin, run.id, 60)
    assert waiting.state == "waiting", waiting.error
    # The coordinator's plan became one dispatched step per task, each to the agent it named.
    work = sorted((s for s in waiting.steps if s.parent == "work"), key=lambda s: s.key)
    assert [(s.key, s.input["agent"]) for s in work] == [
        ("work[0]", "incident-investigator"),
        ("work[1]", "incident-writer"),
    ]
    assert app.workflows.store.ledger(run.id) == []  # nothing posted before the approval
    (approval,) = [a for a in app.workflows.list_approvals(admin) if a.run_id == run.id]
    assert approval.prompt.startswith(
        "Post this update for 'an API key leaked in a public repo'? A leaked key"
    )
    app.workflows.answer(admin, approval.id, {"approved": True, "note": "ok"})
    done = app.workflows.wait(admin, run.id, 60)
    assert done.state == "succeeded", done.error
    assert done.outputs["approved"] is True and done.outputs["posted"] is True
    assert done.outputs["update"].startswith("A leaked key was revoked")
    (entry,) = app.workflows.store.ledger(run.id)
    assert entry["tool"] == "incident.post-update" and entry["state"] == "done"
    (effect,) = app.workflows.store.effects(run.id)
    assert json.loads(effect["value"])["update"] == done.outputs["update"]


def test_research_and_cite_answers_parts_checks_citations_and_cites_them(app):
    runtime = ScriptedRuntime(
        [
            json.dumps({"subquestions": ["What is the per diem in Europe?", "Who books business class?"]}),
            "The per diem in Europe is 75 EUR a day [1].",  # the two parts' cited answers
            "The travel office books flights over six hours in business class [1].",
            "Meals in Europe get 75 EUR a day [1]; the travel office books long flights [2].",
        ]
    )
    app.models.serve(runtime)
    admin = app.access.system_scope()
    run = app.workflows.start(
        admin, "research-and-cite", {"question": "What are the per diems and who books flights?"}
    )
    done = app.workflows.wait(admin, run.id, 120)
    assert done.state == "succeeded", done.error
    assert done.outputs["subquestions"] == ["What is the per diem in Europe?", "Who books business class?"]
    assert done.outputs["citations_valid"] is True and done.outputs["problems"] == []
    cited = done.outputs["citations"]
    assert cited
    for c in cited:  # each cited chunk exists, and the text carried is the chunk's own
        chunks = app.knowledge.get_document(admin, c["document_id"], with_chunks=True).chunks
        assert next(k for k in chunks if k.chunk_id == c["chunk_id"]).text == c["text"]
    assert done.outputs["answer"].startswith("Meals in Europe get 75 EUR")
    assert [s.key for s in done.steps if s.parent == "parts"] == ["parts[0]", "parts[1]"]


def test_a_forged_citation_or_quote_is_a_problem_the_validator_names(app):
    admin = app.access.system_scope()
    doc = next(d for d in app.knowledge.list_documents(admin, "handbook").documents if d.source_id == "keys")
    chunk = app.knowledge.get_document(admin, doc.id, with_chunks=True).chunks[0]
    app.workflows.apply(
        admin,
        parse(
            """
kind: Workflow
name: forged
inputs: {type: object, properties: {answers: {type: array}}}
steps:
  - {id: check, tool: builtin.check_citations, with: {answers: "${inputs.answers}"}}
outputs: {check: "${steps.check.output}"}
"""
        ),
    )
    answers = [
        {
            "answer": "Revoke it.",
            "citations": [{"chunk_id": chunk.chunk_id, "snippet": "Revoke a leaked API key"}],
        },
        {
            "answer": "Keys never expire.",
            "citations": [{"chunk_id": chunk.chunk_id, "snippet": "Keys never expire"}],
        },
        {"answer": "Made up.", "citations": [{"chunk_id": 987654321}]},
        {"answer": "No source.", "citations": []},
    ]
    run = app.workflows.start(admin, "forged", {"answers": answers})
    check = app.workflows.wait(admin, run.id, 60).outputs["check"]
    assert check["valid"] is False and check["checked"] == 3
    assert [(p["answer"], p["problem"]) for p in check["problems"]] == [
        (1, "the quote is not in the chunk"),
        (2, "no such chunk"),
        (3, "an answer without citations"),
    ]
    assert [c["chunk_id"] for c in check["citations"]] == [chunk.chunk_id]


def test_document_triage_on_the_embedded_smollm2(app):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (scripts/build-llama-wheel.sh)")
    from appliance.models.llamacpp import LlamaCppRuntime
    from appliance.models.manifest import SMOLLM2, smollm2_path

    # One thread, as in tests/evaluate: on a small shared machine a second one costs more than it gains.
    runtime = LlamaCppRuntime(smollm2_path(), SMOLLM2.name, context_length=2048, threads=1, slots=1)
    try:
        app.models.serve(runtime)
        admin = app.access.system_scope()
        run = app.workflows.start(admin, "document-triage", {"collection": "handbook", "limit": 5})
        done = app.workflows.wait(admin, run.id, 300)
    finally:
        runtime.close()
    assert done.state == "succeeded", done.error
    table = done.outputs["table"]
    listed = done.outputs["documents"]
    assert {d["source_id"] for d in listed} == {"travel", "keys"}
    assert [row["about"]["document_id"] for row in table] == [d["document_id"] for d in listed]
    categories = {"policy", "procedure", "incident", "report", "correspondence", "other"}
    for row in table:  # the model's records, constrained to the schema and checked against it
        assert row["record"]["category"] in categories
        assert isinstance(row["record"]["urgent"], bool) and len(row["record"]["summary"]) <= 200
    extract = [s for s in done.steps if s.parent == "rows"]
    assert len(extract) == 2 and all(s.state == "succeeded" for s in extract)
    assert done.usage["tokens"] > 0
