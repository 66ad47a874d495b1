"""The `tune` job: stopped mid-training (the appliance closed under it) it resumes from its checkpoint
in the next appliance on the same data dir, and its result is registered as a new embedding version
with its lineage and held-out scores, without touching the collection's embedder."""

from __future__ import annotations

import time

import pytest

from appliance.config import load_settings
from appliance.core import Appliance
from appliance.errors import InvalidInput
from appliance.ingest.intake import NewDocument
from tests.tune.test_pairs import FACTS, MORE

STEPS = 8


def _appliance(data) -> Appliance:
    settings = load_settings(overrides={"data_dir": str(data), "llm": {"load_at_start": False}}, environ={})
    app = Appliance(settings)
    app.start()
    return app


def _doc(topic: str, facts: str) -> NewDocument:
    text = f"# {topic.title()} handbook\n\n## Survey\n\n{facts}\n\n## Follow-up\n\n{MORE} The {topic} passed."
    return NewDocument(source_id=f"{topic}.md", title=None, text=text, content=None, filename=f"{topic}.md")


def test_a_tuning_job_stopped_mid_training_resumes_from_its_checkpoint_and_registers_its_model(tmp_path):
    data = tmp_path / "data"
    first = _appliance(data)
    try:
        admin = first.access.system_scope()
        first.knowledge.create_collection(admin, "handbooks")
        job_id, _ = first.knowledge.submit(admin, "handbooks", [_doc(t, f) for t, f in FACTS.items()])
        assert first.jobs.wait(job_id).state == "succeeded"
        with pytest.raises(InvalidInput):
            first.tuning.tune_embedder(admin, "handbooks", budget_seconds=0)
        job = first.tuning.tune_embedder(
            admin, "handbooks", max_steps=STEPS, batch_size=4, held_out_fraction=0.25, seed=1
        )
        checkpoint = data / "tuning" / job.id / "checkpoint.pt"
        # Close the appliance once the first checkpoint is written: training stops at its next step.
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        first.close()

    second = _appliance(data)
    try:
        assert second.job_store.get(job.id).state in ("queued", "running")  # left to resume, not failed
        done = second.jobs.wait(job.id, timeout=600)  # signalled again at start-up
        assert done.state == "succeeded", done.error
        summary = done.summary
        training = summary["training"]
        assert 0 < training["resumed_from"] < STEPS, "the job was not interrupted mid-training"
        assert training["steps"] == STEPS and training["finished"]
        assert (done.progress.processed, done.progress.total) == (STEPS, STEPS)
        assert summary["data"]["train"]["heading"] > 0 and summary["held_out_before"]["queries"] > 0
        assert set(summary["held_out_after"]) == {"ndcg@10", "recall@10", "queries"}

        model = summary["model"]
        version = second.registry.registry.store.version(model["name"], model["version"])
        assert (version.kind, version.backend, version.state, version.source) == (
            "embedding",
            "sentence-transformers",
            "ready",
            "tuned",
        )
        lineage = version.probe["lineage"]
        assert lineage["base_model"] == "all-MiniLM-L6-v2"
        assert lineage["collection"] == "handbooks"
        assert lineage["held_out_after"] == summary["held_out_after"]
        assert lineage["data"] == summary["data"]
        assert str(data) in version.path
        resolved = second.registry.resolve(f"{model['name']}@{model['version']}", "embedding")
        from appliance.tune.heldout import encoder

        assert encoder(resolved.path)(["a survey of the harbour"]).shape == (1, 384)
        # Registering is all: the collection still searches with the embedder it had.
        assert second.embedder.name == "all-MiniLM-L6-v2" or "MiniLM" in second.embedder.name
    finally:
        second.close()
