"""Drift statistics on real MiniLM embeddings of generated questions and seeded scalar signals:
off-topic traffic raises the alert, traffic like the reference does not (at most once in 20)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from appliance.evaluate import drift
from appliance.models import catalog
from appliance.models.embedder import SentenceTransformerEmbedder

LIMITS = drift.Thresholds()

# Questions a travel-and-expenses collection gets (100), and questions about cooking (100); a
# window draws from one of these pools, so repeats happen, as they do in real traffic.
ON_TOPIC = [
    f"{a} {b}{c}"
    for a, b, c in itertools.product(
        [
            "How many vacation days do I get",
            "What is the per diem",
            "Who approves travel expenses",
            "How do I book a flight",
            "Which hotel rate is allowed",
            "Can I expense a taxi",
            "How do I submit a receipt",
            "What is the mileage rate",
            "Is business class allowed",
            "How early must I request leave",
        ],
        [
            "for a trip to Berlin",
            "in Asia",
            "for contractors",
            "for a conference",
            "for new employees",
            "during a client visit",
            "for managers",
            "on weekends",
            "for a two-week assignment",
            "in the UK",
        ],
        ["?"],
    )
]
OFF_TOPIC = [
    f"{a} {b}{c}"
    for a, b, c in itertools.product(
        [
            "How long should I bake",
            "What oven temperature is best for",
            "How do I knead the dough for",
            "Which spices go well with",
            "How much salt goes into",
            "Can I freeze leftover",
            "How do I caramelize the top of",
            "What wine pairs with",
            "How do I thicken the sauce for",
            "Why did it go soggy when I made",
        ],
        [
            "sourdough bread",
            "a whole roast chicken",
            "pizza",
            "lentil soup",
            "chocolate cake",
            "tomato sauce",
            "french onion soup",
            "mushroom risotto",
            "salmon fillets",
            "apple pie",
        ],
        ["?"],
    )
]


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    embedder = SentenceTransformerEmbedder(
        catalog.default_embedding_dir(), device="cpu", name=catalog.MINILM_NAME
    )
    return embedder.embed_documents(ON_TOPIC), embedder.embed_documents(OFF_TOPIC)


def draw(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A window of `n` queries drawn from `pool`: traffic from one fixed distribution."""
    return pool[rng.integers(0, len(pool), n)]


def test_two_hundred_off_topic_queries_in_the_current_window_raise_the_alert(vectors):
    on, off = vectors
    rng = np.random.default_rng(7)
    reference = draw(on, 300, rng)
    current = np.vstack([draw(on, 300, rng), draw(off, 200, rng)])  # 200 off-topic queries injected
    result = drift.embedding_drift(reference, current, LIMITS, seed=1)
    assert result.drifted and result.p_value < 0.05, result.note
    assert (result.reference_n, result.current_n) == (300, 500)
    # The same windows without the injection: no alert.
    calm = drift.embedding_drift(reference, draw(on, 300, rng), LIMITS, seed=1)
    assert not calm.drifted and calm.p_value >= 0.05, calm.note


def test_twenty_windows_like_the_reference_raise_the_alert_at_most_once(vectors):
    on, _ = vectors
    # Three reference windows, each checked against twenty current windows of the same traffic.
    for seed in (11, 12, 13):
        rng = np.random.default_rng(seed)
        reference = draw(on, 300, rng)
        results = [drift.embedding_drift(reference, draw(on, 300, rng), LIMITS, seed=i) for i in range(20)]
        alerts = [r.note for r in results if r.drifted]
        assert len(alerts) <= 1, (seed, alerts)
        assert max(r.statistic for r in results) < LIMITS.mmd2


def test_the_domain_classifier_tells_off_topic_traffic_apart(vectors):
    pytest.importorskip("sklearn")
    on, off = vectors
    rng = np.random.default_rng(3)
    limits = drift.Thresholds(classifier=True)
    shifted = drift.embedding_drift(draw(on, 200, rng), np.vstack([draw(on, 100, rng), off]), limits)
    assert shifted.p_value < 0.05 and shifted.statistic >= limits.mmd2
    same = drift.embedding_drift(draw(on, 200, rng), draw(on, 200, rng), limits)
    assert shifted.auc > 0.55 and shifted.drifted
    assert same.auc < 0.65


def test_the_mmd_p_value_is_seeded_and_bounded_by_the_permutations(vectors):
    on, off = vectors
    first = drift.mmd_test(on[:100], off[:100], permutations=50, seed=5)
    assert first == drift.mmd_test(on[:100], off[:100], permutations=50, seed=5)
    assert first[1] == pytest.approx(1 / 51)  # no random split comes near the observed one
    assert drift.sample(1000, 500, np.random.default_rng(0)).shape == (500,)
    assert list(drift.sample(3, 500, np.random.default_rng(0))) == [0, 1, 2]


def test_psi_is_near_zero_for_the_same_population_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    reference = rng.lognormal(7.0, 0.4, 2000)  # latencies around 1.1 s
    assert drift.psi(reference, rng.lognormal(7.0, 0.4, 2000)) < 0.05
    assert drift.psi(reference, rng.lognormal(7.7, 0.4, 2000)) > 0.2  # twice as slow
    # Ties merge the quantile bins: a yes/no signal has two, and its PSI is finite.
    yes_no = drift.psi(np.r_[np.zeros(90), np.ones(10)], np.r_[np.zeros(50), np.ones(50)])
    assert 0.2 < yes_no < 10


def test_scalar_signals_drift_when_significant_and_large():
    rng = np.random.default_rng(1)
    latency = rng.lognormal(7.0, 0.4, 400)
    slower = drift.scalar_drift("latency", latency, rng.lognormal(7.7, 0.4, 400), LIMITS)
    same = drift.scalar_drift("latency", latency, rng.lognormal(7.0, 0.4, 400), LIMITS)
    assert slower.drifted and slower.test == "ks" and slower.p_value < 1e-6 and slower.psi > 0.2
    assert not same.drifted
    # A tiny shift on big windows is significant but not large: no alert.
    big = rng.lognormal(7.0, 0.4, 20000)
    nudged = drift.scalar_drift("latency", big, rng.lognormal(7.03, 0.4, 20000), LIMITS)
    assert nudged.p_value < 0.05 and nudged.psi < 0.2 and not nudged.drifted
    # A yes/no signal: Fisher's exact test on the rates; unrated answers (NaN) are left out.
    refusals = drift.scalar_drift(
        "refusal_rate", np.r_[np.zeros(190), np.ones(10)], np.r_[np.zeros(140), np.ones(60)], LIMITS, True
    )
    assert refusals.drifted and refusals.test == "fisher" and refusals.statistic == pytest.approx(0.25)
    rated = drift.scalar_drift(
        "thumbs_down_rate",
        np.r_[np.full(500, np.nan), np.zeros(40)],
        np.r_[np.zeros(10), np.ones(2)],
        LIMITS,
        True,
    )
    assert not rated.drifted and rated.p_value is None and "too few answers" in rated.note
    assert (rated.reference_n, rated.current_n) == (40, 12)
