"""An eval run stopped mid-way (the appliance closed under it) resumes in the next appliance on the
same data dir, skipping the items it had done, to the scorecard of an uninterrupted run."""

from __future__ import annotations

import time

from appliance.config import load_settings
from appliance.core import Appliance
from tests.core.evalsets import TOPICS, beir_set

QUERIES_PER_TOPIC = 2


def _appliance(data) -> Appliance:
    settings = load_settings(overrides={"data_dir": str(data), "llm": {"load_at_start": False}}, environ={})
    app = Appliance(settings)
    app.start()
    return app


def test_a_run_interrupted_by_a_restart_resumes_to_the_same_scorecard(tmp_path):
    data = tmp_path / "data"
    first = _appliance(data)
    try:
        admin = first.access.system_scope()
        evalset = first.evals.import_dir(
            admin, "resume", beir_set(tmp_path / "set", TOPICS, QUERIES_PER_TOPIC)
        )
        for job in evalset.ingest_jobs:
            assert first.jobs.wait(job).state == "succeeded"
        run = first.evals.start_run(admin, "resume", mode="hybrid", top_k=10)
        # Close the appliance as soon as the first items are stored: its worker stops between items.
        deadline = time.monotonic() + 120
        while not first.evals.store.done_ordinals(run.id) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        first.close()

    second = _appliance(data)
    try:
        admin = second.access.system_scope()
        stopped_at = len(second.evals.store.done_ordinals(run.id))
        total = len(TOPICS) * QUERIES_PER_TOPIC
        assert 0 < stopped_at < total, "the run was not interrupted mid-way"
        job = second.jobs.wait(run.job_id)  # signalled again at start-up, like any interrupted job
        assert job.state == "succeeded", job.error
        assert (job.progress.processed, job.progress.total) == (total, total)
        resumed = second.evals.get_run(admin, run.id)
        ordinals = [o.ordinal for o in second.evals.run_items(admin, run.id, order="ordinal", limit=total)]
        assert ordinals == list(range(total))  # each item once: done items were skipped
        reference = second.evals.start_run(admin, "resume", mode="hybrid", top_k=10)
        assert second.jobs.wait(reference.job_id).state == "succeeded"
        expected = second.evals.get_run(admin, reference.id).scorecard
        quality = ("items", "failed", "ndcg@10", "recall@10", "recall@100", "precision@10", "mrr")
        assert {k: resumed.scorecard[k] for k in quality} == {k: expected[k] for k in quality}
        assert resumed.config["retrieval"] == second.evals.get_run(admin, reference.id).config["retrieval"]
    finally:
        second.close()
