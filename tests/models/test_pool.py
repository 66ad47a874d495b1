"""The resident pool over echo runtimes: the budget, pinning, LRU, in-flight models, cold loads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from appliance.errors import NotFound
from appliance.models.echo import EchoRuntime
from appliance.models.manifest import ModelSpec
from appliance.models.pool import ModelLoading, ModelPool, NoRoom
from appliance.models.runtime import GenerationParams

SIZES = {"a": 400.0, "b": 300.0, "c": 300.0, "big": 900.0, "huge": 2000.0}
PARAMS = GenerationParams(max_tokens=2, temperature=0.0)


class Catalogue:
    """Echo models by name, each with its size; a load of a gated model waits for its gate."""

    def __init__(self) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.loads: list[str] = []
        self.fail: set[str] = set()

    def resolve(self, name: str) -> tuple[ModelSpec, Path]:
        if name.lower() not in SIZES:
            raise NotFound(f"unknown model {name!r}")
        return ModelSpec(name=name.lower(), file="", sha256=None, size=None, context_length=256), Path()

    def load(self, spec: ModelSpec, path: Path) -> EchoRuntime:
        if (gate := self.gates.get(spec.name)) is not None:
            assert gate.wait(10), "gate never opened"
        self.loads.append(spec.name)
        if spec.name in self.fail:
            raise RuntimeError("the weights are corrupt")
        return EchoRuntime(spec.name, context_length=256)

    def estimate(self, spec: ModelSpec, path: Path) -> float:
        return SIZES[spec.name]


@pytest.fixture
def cat() -> Catalogue:
    return Catalogue()


@pytest.fixture
def pool(cat: Catalogue):
    p = ModelPool(1000, cat.resolve, cat.load, cat.estimate, max_queue=4, measure=lambda: 0.0)
    yield p
    p.close()


def _names(pool: ModelPool) -> set[str]:
    return {m["name"] for m in pool.snapshot()["models"]}


def _use_and_release(pool: ModelPool, name: str) -> None:
    """A request that is served and done: its model then counts as idle."""
    served = pool.get(name)
    served.generate("user says hi", PARAMS)


def test_budget_is_never_exceeded_and_lru_leaves_first(pool: ModelPool):
    for name in ("a", "b", "c"):  # 400 + 300 + 300 = 1000: exactly the budget
        _use_and_release(pool, name)
    assert _names(pool) == {"a", "b", "c"} and pool.used_mb == 1000
    _use_and_release(pool, "a")  # a is now the most recently used; b the least
    _use_and_release(pool, "c")
    _use_and_release(pool, "big")  # 900 needs a, b and c gone... all of them idle
    assert pool.evictions == ["b", "a", "c"]
    assert _names(pool) == {"big"}
    assert pool.peak_mb <= pool.budget_mb


def test_only_what_is_needed_is_evicted_in_lru_order(pool: ModelPool):
    for name in ("a", "b", "c"):
        _use_and_release(pool, name)
    _use_and_release(pool, "b")  # order of use now: a, c, b
    pool.remove("c")
    _use_and_release(pool, "c")  # 300 more: 1000 again, nothing evicted
    assert pool.evictions == []
    with pytest.raises(NoRoom):
        pool.get("huge")  # more than the whole budget: refused outright, nobody evicted
    assert pool.evictions == [] and _names(pool) == {"a", "b", "c"}


def test_pinned_model_is_never_evicted(pool: ModelPool):
    pool.get("a", pinned=True).generate("user says hi", PARAMS)
    _use_and_release(pool, "b")
    _use_and_release(pool, "c")
    with pytest.raises(NoRoom) as info:
        pool.get("big")  # would need a (pinned) out
    assert "pinned" in info.value.detail and info.value.extra["code"] == "insufficient_memory"
    assert "a" in _names(pool) and pool.peak_mb <= pool.budget_mb


def test_model_with_a_request_in_flight_is_never_evicted(pool: ModelPool):
    _use_and_release(pool, "a")
    served_b = pool.get("b")
    stream = served_b.stream("user says one two three", GenerationParams(max_tokens=50, temperature=0.0))
    next(stream)  # b is streaming
    _use_and_release(pool, "c")
    with pytest.raises(NoRoom):
        pool.get("big")  # a and c are idle (600 freed), b streams: 900 cannot fit
    assert "b" in _names(pool)
    stream.close()  # the stream ends: b is idle now
    _use_and_release(pool, "big")
    assert set(pool.evictions) == {"a", "b", "c"}


def test_a_model_handed_out_but_not_yet_queued_is_not_evicted(pool: ModelPool):
    _use_and_release(pool, "a")
    held = pool.get("b")  # the caller renders its prompt: not in the queue yet, held
    _use_and_release(pool, "c")
    with pytest.raises(NoRoom):
        pool.get("big")
    held.generate("user says hi", PARAMS)  # it arrives and finishes: no longer held
    _use_and_release(pool, "big")


def test_cold_load_waits_with_positions_or_says_model_loading(pool: ModelPool, cat: Catalogue):
    cat.gates["a"] = threading.Event()
    with pytest.raises(ModelLoading) as info:
        pool.get("a", wait=False)  # starts the load, answers at once
    assert info.value.extra["code"] == "model_loading" and info.value.extra["retry_after"] >= 1
    assert pool.state_of("a")["state"] == "loading"  # visible, and not a failure
    heard: list[int] = []
    got: dict = {}
    waiter = threading.Thread(target=lambda: got.setdefault("m", pool.get("a", on_position=heard.append)))
    waiter.start()
    while not heard:
        waiter.join(0.01)
    cat.gates["a"].set()
    waiter.join(10)
    assert got["m"].name == "a" and heard[0] == 1 and heard[-1] == 0
    assert cat.loads == ["a"]  # one load for both requests
    assert pool.state_of("a")["state"] == "loaded"


def test_load_timeout_is_model_loading_not_failure(pool: ModelPool, cat: Catalogue):
    cat.gates["a"] = threading.Event()
    with pytest.raises(ModelLoading):
        pool.get("a", timeout_s=0.05)
    assert pool.state_of("a")["state"] == "loading"
    cat.gates["a"].set()
    assert pool.get("a").name == "a"


def test_failed_load_is_reported_and_frees_its_budget(pool: ModelPool, cat: Catalogue):
    cat.fail.add("big")
    with pytest.raises(Exception, match="failed to load: RuntimeError: the weights are corrupt"):
        pool.get("big")
    assert pool.state_of("big")["state"] == "failed" and pool.used_mb == 0
    _use_and_release(pool, "a")


def test_loads_never_overcommit_even_while_loading(pool: ModelPool, cat: Catalogue):
    cat.gates["a"] = threading.Event()
    cat.gates["b"] = threading.Event()
    with pytest.raises(ModelLoading):
        pool.get("a", wait=False)
    with pytest.raises(ModelLoading):
        pool.get("b", wait=False)
    with pytest.raises(NoRoom):
        pool.get("big", wait=False)  # 700 reserved by loads in progress: they cannot be evicted
    cat.gates["a"].set()
    cat.gates["b"].set()
    assert pool.get("a").name == "a" and pool.get("b").name == "b"
    assert pool.peak_mb <= pool.budget_mb


def test_a_blue_green_flip_serves_the_name_by_the_new_model_and_drains_the_old(pool):
    old = pool.adopt(EchoRuntime("fam", context_length=256), need_mb=300, pinned=True)
    new = pool.adopt(EchoRuntime("fam@2", context_length=256), need_mb=300, pinned=False)
    running = old.stream(
        old.render_chat([_msg("one two three four")]), GenerationParams(max_tokens=3, temperature=0.0)
    )
    assert next(running).text == "one"  # a request in flight on the old version
    assert pool.flip("fam", "fam@2")
    assert pool.use("fam") is new and pool.state_of("fam")["pinned"]  # the pin moved with the name
    retired = next(m for m in pool.snapshot()["models"] if m["name"].startswith("fam~retired"))
    assert retired["pinned"] is False and retired["in_flight"] == 1
    rest = "".join(d.text for d in running)  # the old version finishes what it started
    assert rest.split() == ["two", "three"]
    _until(lambda: not any(n.startswith("fam~") for n in _names(pool)))
    assert _names(pool) == {"fam@2"}
    # Flipping again moves the name on; a name whose model left resolves afresh.
    third = pool.adopt(EchoRuntime("fam@3", context_length=256), need_mb=300, pinned=False)
    assert pool.flip("fam", "fam@3") and pool.use("fam") is third
    assert not pool.flip("fam", "nothing-loaded")
    assert pool.retire("fam") and pool.use("fam") is None


def _msg(text: str):
    from appliance.models.runtime import ChatMessage

    return ChatMessage("user", text)


def _until(done, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.02)
