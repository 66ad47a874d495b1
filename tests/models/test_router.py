"""The `auto` router with the packaged MiniLM: tag rules, semantic routes, calibrated thresholds, reasons."""

from __future__ import annotations

import pytest

from appliance.errors import InvalidInput
from appliance.models import catalog
from appliance.models.echo import EchoRuntime
from appliance.models.embedder import SentenceTransformerEmbedder
from appliance.models.manifest import ModelSpec
from appliance.models.pool import ModelPool
from appliance.models.router import AutoRouter, SemanticRouter, load_routes


@pytest.fixture(scope="module")
def embedder():
    return SentenceTransformerEmbedder(
        catalog.default_embedding_dir(), device="cpu", name=catalog.MINILM_NAME
    )


def _never(*_):
    raise AssertionError("routing never loads a model")


@pytest.fixture(scope="module")
def pool():
    p = ModelPool(1000, _never, _never, lambda *_: 0.0)
    p.adopt(EchoRuntime("coder"), pinned=False, capabilities=("chat", "completion", "code"))
    yield p
    p.close()


CATALOGUE = [
    ModelSpec("base", "base.gguf", None, None, 2048),
    ModelSpec("coder-big", "big.gguf", None, None, 2048, capabilities=("chat", "code")),
    ModelSpec("caller", "caller.gguf", None, None, 2048, capabilities=("chat", "tools")),
]


@pytest.fixture(scope="module")
def router(embedder, pool):
    return AutoRouter(embedder, lambda: CATALOGUE, pool)


def test_thresholds_are_calibrated_on_the_examples(router):
    semantic = router.semantic
    semantic._ready()
    assert set(semantic.thresholds) == {"code", "documents", "general"}
    assert semantic.thresholds["general"] == -1.0  # the fallback takes whatever it is closest to
    assert all(-1.0 <= t <= 1.0 for t in semantic.thresholds.values())
    # The calibration keeps each route's own examples: classified left-in, they all route home.
    for route, vectors in zip(semantic.routes, semantic._ready(), strict=True):
        got = [semantic.classify("", v)[0].name for v in vectors]
        assert got.count(route.name) >= len(got) - 1, (route.name, got)


def test_auto_routes_code_to_a_code_model_resident_first_with_reasons(router):
    d = router.decide(
        "auto", "how can I remove duplicates from a list while keeping the order", False, "base"
    )
    assert d.route == "code" and d.reason.startswith("semantic: code")
    assert d.candidates == ("coder", "coder-big", "base")  # resident first, the default last
    assert d.model == "coder" and "route=code; model=coder; score=" in d.header()


def test_code_in_the_message_is_a_rule(router):
    d = router.decide("auto", "what is wrong here?\n```\nfor i in range(3) print(i)\n```", False, "base")
    assert d.route == "code" and d.reason == "rule: the message contains code" and d.score is None


def test_documents_and_general_go_to_the_default(router):
    docs = router.decide(
        "auto", "how many vacation days do part-time staff get under our leave policy", False, "base"
    )
    assert docs.route == "documents" and docs.candidates == ("base",)
    general = router.decide("auto", "why do onions make people cry", False, "base")
    assert general.route == "general" and general.model == "base"


def test_tools_go_to_a_model_tagged_tools(router):
    d = router.decide("auto", "what's the weather in Oslo", True, "base")
    assert d.route == "tools" and d.reason == "rule: the request offers tools"
    assert d.candidates == ("caller", "base")


def test_no_model_with_the_tag_says_so_and_serves_on_the_default(embedder, pool):
    bare = AutoRouter(embedder, lambda: [], ModelPool(1000, _never, _never, lambda *_: 0.0))
    d = bare.decide("auto", "use the tool", True, "base")
    assert d.model == "base" and "no model is tagged tools: the default serves it" in d.reason


def test_named_models_are_explicit(router):
    assert router.decide("default", "x", False, "base").candidates == ("base",)
    d = router.decide("coder-big", "hello", True, "base")
    assert d.route == "explicit" and d.model == "coder-big" and d.candidates == ("coder-big",)


def test_below_threshold_takes_the_fallback(embedder, tmp_path):
    routes = tmp_path / "routes.toml"
    routes.write_text(
        'fallback = "other"\n'
        '[[routes]]\nname = "weather"\nexamples = ["will it rain tomorrow", "what is the forecast for the weekend",'
        ' "how hot will it be today", "is it going to snow tonight"]\n'
        '[[routes]]\nname = "other"\nexamples = ["tell me about the roman empire", "how do magnets work",'
        ' "recommend a film", "what is a prime number"]\n'
    )
    semantic = SemanticRouter(*load_routes(routes), embedder.embed_documents, embedder.embed_query)
    assert semantic.classify("will there be a thunderstorm this afternoon")[0].name == "weather"
    route, score, reason = semantic.classify("pass the salt please")
    assert route.name == "other", (score, reason, semantic.thresholds)


def test_bad_routes_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "routes.toml"
    bad.write_text('fallback = "nowhere"\n[[routes]]\nname = "a"\nexamples = ["x"]\n')
    with pytest.raises(InvalidInput, match="fallback 'nowhere' must name one of its routes"):
        load_routes(bad)
