"""Per-collection fusion: stored settings are what hybrid search uses, and calibration chooses them."""

from __future__ import annotations

import pytest

from appliance.errors import InvalidInput, NotFound
from appliance.records import CollectionFusion, FusionCandidateScore, FusionSettings
from tests.inprocess import echo_appliance, ingest

DOCS = {
    "zebra": "Deployment code ZEBRA-4471 unlocks the staging cluster. Keep it private.",
    "rockets": "How to launch rockets into orbit safely: a practical guide to spaceflight and boosters.",
    "pasta": "Cooking pasta: salt the water generously and stir while it boils.",
    "gardens": "Watering a garden in summer: early mornings are best for tomatoes.",
    "orbits": "Satellites stay in orbit because they keep falling around the Earth.",
}
QUERY = "rocket launch code ZEBRA-4471"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app = echo_appliance(tmp_path_factory.mktemp("calibration") / "data")
    ingest(app, "docs", DOCS)
    ingest(app, "other", {"note": "An unrelated note about rockets and launch codes."})
    yield app
    app.close()


@pytest.fixture(scope="module")
def admin(app):
    return app.access.system_scope()


def order(app, admin, mode, collections=("docs",)):
    return [
        h.source_id for h in app.knowledge.search(admin, QUERY, list(collections), top_k=5, mode=mode).hits
    ]


def stored(app, settings: FusionSettings) -> None:
    score = FusionCandidateScore(settings=settings, ndcg_at_10=0.5, recall_at_100=1.0)
    app.searcher.fusion_store.save(
        CollectionFusion(
            collection="docs", settings=settings, eval_set="t@1", items=1, default_score=score, scores=[score]
        )
    )


def test_hybrid_search_uses_the_collections_stored_fusion(app, admin):
    keyword, semantic = order(app, admin, "keyword"), order(app, admin, "semantic")
    assert keyword != semantic  # the data makes the two retrievers disagree
    default = order(app, admin, "hybrid")
    app.knowledge.search(admin, QUERY, ["docs"], top_k=5)  # now in the retrieval cache

    stored(app, FusionSettings(method="weighted", semantic_weight=0.0))
    assert app.searcher.fusion_for(["docs"]).semantic_weight == 0.0
    result = app.knowledge.search(admin, QUERY, ["docs"], top_k=5)
    assert not result.cached  # the cached result was fused another way
    assert [h.source_id for h in result.hits] == keyword

    stored(app, FusionSettings(method="rrf", semantic_weight=1.0))
    assert order(app, admin, "hybrid") == semantic
    # Another collection, or several with different settings, keep the server default.
    assert app.searcher.fusion_for(["other"]) == app.searcher.default_fusion
    assert app.searcher.fusion_for(["docs", "other"]) == app.searcher.default_fusion

    assert app.calibration.reset(admin, "docs") and not app.calibration.reset(admin, "docs")
    assert order(app, admin, "hybrid") == default
    with pytest.raises(NotFound):
        app.calibration.get(admin, "docs")


def test_calibration_needs_a_generated_set_of_the_collection(app, admin):
    with pytest.raises(InvalidInput, match="eval generate"):
        app.calibration.start(admin, "other")


def test_calibration_tunes_on_the_generated_set_and_records_what_chose(app, admin):
    items = [
        {"question": "which deployment code unlocks staging", "gold": ["zebra"], "answers": ["ZEBRA-4471"]},
        {"question": "ZEBRA-4471", "gold": ["zebra"], "answers": ["staging"]},
        {"question": "how do satellites remain up there?", "gold": ["orbits"], "answers": ["falling"]},
        {"question": "sending spacecraft up with boosters", "gold": ["rockets"], "answers": ["orbit"]},
        {"question": "when should tomatoes get water", "gold": ["gardens"], "answers": ["mornings"]},
    ]
    app.evals.create_qa_set(admin, "docs-generated", items, kind="generated", collection="docs")
    job = app.calibration.start(admin, "docs")
    assert app.jobs.wait(job.id).state == "succeeded"
    record = app.calibration.get(admin, "docs")
    assert record.items == 5 and record.eval_set == "docs-generated@1" and record.job_id == job.id
    assert record.calibrated_at and len(record.scores) > 50
    assert record.chunks == app.catalog.get_collection("docs").chunks > 0
    ranks = [(s.ndcg_at_10, s.recall_at_100) for s in record.scores]
    assert ranks == sorted(ranks, reverse=True)
    best = record.scores[0]
    if record.settings != app.searcher.default_fusion:  # chosen only when it beats the default
        assert best.ndcg_at_10 > record.default_score.ndcg_at_10
    assert record.default_score.settings == app.searcher.default_fusion
    assert app.searcher.fusion_for(["docs"]) == record.settings
    app.calibration.reset(admin, "docs")


def test_the_api_and_cli_show_start_and_reset_calibration(app, admin, capsys):
    from appliance.cli import main
    from appliance.client import ApiError, ApplianceClient
    from tests.inprocess import InProcessServer

    server = InProcessServer(app).start()
    try:
        client = ApplianceClient(server.url, server.key)
        with pytest.raises(ApiError) as missing:
            client.collection_fusion("docs")
        assert missing.value.status == 404
        with pytest.raises(ApiError) as no_set:
            client.calibrate_fusion("other")
        assert no_set.value.status == 400 and "eval generate" in str(no_set.value)
        stored(app, FusionSettings(method="zscore", semantic_weight=0.6))
        assert client.collection_fusion("docs")["settings"]["method"] == "zscore"
        assert main(["retrieval", "fusion", "-c", "docs", "--url", server.url, "--key", server.key]) == 0
        assert "zscore, semantic weight 0.6" in capsys.readouterr().out
        assert (
            main(["retrieval", "reset", "-c", "docs", "--json", "--url", server.url, "--key", server.key])
            == 0
        )
        assert '"reset": true' in capsys.readouterr().out
        assert app.searcher.fusion_for(["docs"]) == app.searcher.default_fusion
    finally:
        server.stop()
