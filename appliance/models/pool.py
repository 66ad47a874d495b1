"""The resident pool: several chat models loaded at once within a memory budget, pinned or evicted by LRU."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.errors import InvalidInput, NotReady
from appliance.models.manifest import ModelSpec
from appliance.models.runtime import LLMRuntime
from appliance.models.served import ServedModel
from appliance.models.sizing import rss_mb

log = logging.getLogger(__name__)

# A name as the caller gave it -> the model's spec and its file (the manifest's resolve_model by
# default; the registry's resolver, which also knows `name@version` and aliases, plugs in here).
Resolve = Callable[[str], tuple[ModelSpec, Path]]
Load = Callable[[ModelSpec, Path], LLMRuntime]
Estimate = Callable[[ModelSpec, Path], float]

LOADING, LOADED, FAILED, UNLOADING = "loading", "loaded", "failed", "unloading"
# Before any load was timed, assume a model loads at this many MB/s for Retry-After.
_ASSUMED_LOAD_MB_PER_S = 200.0


class ModelLoading(NotReady):
    """The model is being loaded (a cold start, not a failure): retry after `retry_after` seconds."""

    def __init__(self, name: str, retry_after_s: float) -> None:
        self.retry_after_s = max(1.0, retry_after_s)
        super().__init__(
            f"the model {name!r} is loading; retry in about {self.retry_after_s:.0f} s",
            code="model_loading",
            retry_after=max(1, int(-(-self.retry_after_s // 1))),
        )


class NoRoom(NotReady):
    """Loading the model would exceed the memory budget, and nothing idle is left to evict."""

    def __init__(self, detail: str, retry_after_s: float | None) -> None:
        extra: dict = {"code": "insufficient_memory"}
        if retry_after_s is not None:
            extra["retry_after"] = max(1, int(-(-retry_after_s // 1)))
        super().__init__(detail, **extra)


@dataclass(eq=False)
class Resident:
    """One model in the pool: loading, loaded or failed; what it is reckoned to need and measured to use."""

    name: str
    spec: ModelSpec
    path: Path
    need_mb: float  # estimated before loading (the budget is checked against it)
    pinned: bool = False
    state: str = LOADING
    served: ServedModel | None = None
    resident_mb: float | None = None  # measured: the process's growth over the load
    error: str | None = None
    last_used: float = 0.0
    started: float = 0.0
    load_s: float | None = None
    waiters: list[int] = field(default_factory=list)  # tickets of requests waiting for the load
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def charged_mb(self) -> float:
        """What the budget counts: the estimate, or the measurement when that is larger."""
        return max(self.need_mb, self.resident_mb or 0.0)

    def as_dict(self) -> dict:
        served = self.served
        return {
            "name": self.name,
            "state": self.state,
            "pinned": self.pinned,
            "estimated_mb": round(self.need_mb, 1),
            "resident_mb": None if self.resident_mb is None else round(self.resident_mb, 1),
            "in_flight": served.in_flight if served is not None else 0,
            "waiting_for_load": len(self.waiters),
            "load_s": None if self.load_s is None else round(self.load_s, 2),
            "capabilities": list(self.spec.capabilities),
            "error": self.error,
        }


class ModelPool:
    """Chat models resident at once, within `budget_mb`.

    - A model is loaded on first request (one load at a time, in the background); the budget is
      checked against its estimated need before it starts, and its measured size recorded after.
    - To make room, idle models leave in least-recently-used order; pinned models never leave, and
      neither does a model with requests in flight, queued, streaming or on their way to its queue.
    - A request for a model being loaded waits for it (hearing its place among the waiters), or,
      with `wait=False`, gets ModelLoading (503 `model_loading` with Retry-After).
    - `peak_mb` is the most the pool ever counted as resident or loading: never above the budget.
    """

    def __init__(
        self,
        budget_mb: float,
        resolve: Resolve,
        load: Load,
        estimate: Estimate,
        max_queue: int = 8,
        hold_s: float = 30.0,
        measure: Callable[[], float] = rss_mb,
    ) -> None:
        if budget_mb <= 0:
            raise InvalidInput("the model memory budget must be positive (llm.memory_budget_mb)")
        self.budget_mb = float(budget_mb)
        self.resolve = resolve
        self._load = load
        self._estimate = estimate
        self.max_queue = max_queue
        self.hold_s = hold_s
        self._measure = measure
        self._lock = threading.Condition()
        self._load_lock = threading.Lock()  # one load at a time: memory measured per model
        self._models: dict[str, Resident] = {}
        # Blue-green: a name served by another resident (`fam` -> `fam@3`) after a flip.
        self._links: dict[str, str] = {}
        self._retired = 0
        self._tickets = 0
        self.peak_mb = 0.0
        self.evictions: list[str] = []  # names, in the order they were evicted
        self.on_loaded: Callable[[ServedModel], None] | None = None

    # -- reading -------------------------------------------------------------------------------
    @property
    def used_mb(self) -> float:
        with self._lock:
            return self._used()

    def _used(self) -> float:
        return sum(r.charged_mb for r in self._models.values() if r.state != FAILED)

    def snapshot(self) -> dict:
        with self._lock:
            models = [r.as_dict() for r in self._models.values()]
            used = self._used()
        return {"budget_mb": self.budget_mb, "used_mb": round(used, 1), "models": models}

    def state_of(self, name: str) -> dict | None:
        with self._lock:
            r = self._find(name.lower())
            return None if r is None else r.as_dict()

    def resident(self, name: str) -> ServedModel | None:
        with self._lock:
            r = self._find(name.lower())
            return r.served if r is not None and r.state == LOADED else None

    def use(self, name: str) -> ServedModel | None:
        """The model resident under `name` (or that a flip made serve it), counted as used now (and
        held until it reaches its queue); None when it is not loaded. For names already resident,
        the resolver is not asked."""
        with self._lock:
            r = self._find(name.lower())
            return self._use(r) if r is not None and r.state == LOADED else None

    def _find(self, key: str) -> Resident | None:
        """The resident serving `key`: the one a flip linked it to while that one is still here, else
        the one loaded under it. Under the lock."""
        target = self._links.get(key)
        if target is not None:
            r = self._models.get(target)
            if r is not None:
                return r
            del self._links[key]  # the flipped-to model left (evicted): `key` resolves afresh
        return self._models.get(key)

    def busy_besides(self, name: str) -> bool:
        """Whether a resident model other than `name` is generating or has requests waiting for a slot."""
        key = name.lower()
        with self._lock:
            served = [r.served for k, r in self._models.items() if k != key and r.served is not None]
        return any(s.busy for s in served)

    def names(self) -> list[str]:
        with self._lock:
            return [r.name for r in self._models.values()]

    # -- getting a model -----------------------------------------------------------------------
    def get(
        self,
        name: str,
        *,
        wait: bool = True,
        timeout_s: float | None = None,
        on_position: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
        pinned: bool = False,
    ) -> ServedModel:
        """The loaded model `name` resolves to, loading it first if need be (see the class)."""
        spec, path = self.resolve(name)
        return self.get_spec(
            spec, path, wait=wait, timeout_s=timeout_s, on_position=on_position, cancel=cancel, pinned=pinned
        )

    def get_spec(
        self,
        spec: ModelSpec,
        path: Path,
        *,
        wait: bool = True,
        timeout_s: float | None = None,
        on_position: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
        pinned: bool = False,
    ) -> ServedModel:
        key = spec.name.lower()
        with self._lock:
            r = self._models.get(key)
            if r is not None and r.state == UNLOADING:
                raise NotReady(
                    f"the model {r.name!r} is being unloaded; retry in a few seconds", retry_after=2
                )
            if r is None or r.state == FAILED:
                r = self._admit(spec, path, pinned)
            elif pinned:
                r.pinned = True
            if r.state == LOADED:
                return self._use(r)
            if not wait:
                raise ModelLoading(r.name, self._eta(r))
            self._tickets += 1
            ticket = self._tickets
            r.waiters.append(ticket)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            last = 0
            while True:
                with self._lock:
                    if r.state != LOADING:
                        break
                    position = r.waiters.index(ticket) + 1
                if on_position is not None and position != last:
                    on_position(position)
                    last = position
                if cancel is not None and cancel.is_set():
                    from appliance.models.slots import Cancelled

                    raise Cancelled("the request was cancelled while its model loaded")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ModelLoading(r.name, self._eta(r))
                r.done.wait(0.05 if left is None else min(0.05, left))
        finally:
            with self._lock:
                if ticket in r.waiters:
                    r.waiters.remove(ticket)
        with self._lock:
            if r.state == FAILED:
                raise NotReady(f"the model {r.name!r} failed to load: {r.error}")
            if on_position is not None and last:
                on_position(0)
            return self._use(r)

    def _use(self, r: Resident) -> ServedModel:
        assert r.served is not None
        r.last_used = time.monotonic()
        r.served.hold(self.hold_s)
        return r.served

    def _eta(self, r: Resident) -> float:
        timed = [m.load_s / max(m.need_mb, 1.0) for m in self._models.values() if m.load_s]
        per_mb = sum(timed) / len(timed) if timed else 1 / _ASSUMED_LOAD_MB_PER_S
        return max(1.0, r.need_mb * per_mb - (time.monotonic() - r.started))

    def _admit(self, spec: ModelSpec, path: Path, pinned: bool) -> Resident:
        """Reserve the model's place in the budget (evicting idle models) and start its load. Under the lock."""
        need = float(self._estimate(spec, path))
        if need > self.budget_mb:
            raise NoRoom(
                f"the model {spec.name!r} needs about {need:.0f} MB, more than the whole model memory budget "
                f"({self.budget_mb:.0f} MB, llm.memory_budget_mb)",
                None,
            )
        self._make_room(need, spec.name)
        r = Resident(spec.name, spec, path, need, pinned=pinned, started=time.monotonic())
        self._models[spec.name.lower()] = r
        self.peak_mb = max(self.peak_mb, self._used())
        threading.Thread(
            target=self._load_one, args=(r,), name=f"model-load-{spec.name}", daemon=True
        ).start()
        return r

    def _make_room(self, need: float, for_name: str) -> None:
        free = self.budget_mb - self._used()
        if need <= free:
            return
        idle = sorted(
            (
                r
                for r in self._models.values()
                if r.state == LOADED and not r.pinned and r.served is not None and r.served.in_flight == 0
            ),
            key=lambda r: r.last_used,
        )
        evict = []
        for r in idle:
            if free >= need:
                break
            evict.append(r)
            free += r.charged_mb
        if free < need:
            busy = [
                f"{r.name} ({r.charged_mb:.0f} MB, {'pinned' if r.pinned else r.state + ', in use'})"
                for r in self._models.values()
                if r.state != FAILED and r not in evict
            ]
            raise NoRoom(
                f"the model {for_name!r} needs about {need:.0f} MB; the budget ({self.budget_mb:.0f} MB) is "
                f"held by {', '.join(busy) or 'nothing'}; retry when a model is idle",
                retry_after_s=5.0,
            )
        for r in evict:
            self._evict(r)

    def _evict(self, r: Resident) -> None:
        del self._models[r.name.lower()]
        self.evictions.append(r.name)
        log.info("model evicted to make room", extra={"model": r.name, "resident_mb": r.resident_mb})
        if r.served is not None:
            r.served.close()  # idle: returns at once

    def _load_one(self, r: Resident) -> None:
        with self._load_lock:
            before = self._measure()
            try:
                runtime = self._load(r.spec, r.path)
                served = ServedModel(runtime, max_queue=self.max_queue)
            except Exception as exc:  # a failed load is reported on the model, never raised here
                error = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
                log.error("model failed to load", extra={"model": r.name, "error": error})
                with self._lock:
                    r.state, r.error = FAILED, error
                    r.done.set()
                    self._lock.notify_all()
                return
            # A remote model holds no weights here: what the process grew by meanwhile is not its.
            measured = 0.0 if r.spec.remote is not None else max(0.0, self._measure() - before)
        with self._lock:
            if self._models.get(r.name.lower()) is not r:  # removed while it loaded
                r.state = FAILED
                r.error = "unloaded while it loaded"
                r.done.set()
                self._lock.notify_all()
                orphan = served
            else:
                orphan = None
        if orphan is not None:
            orphan.close()
            return
        with self._lock:
            r.served, r.resident_mb = served, measured
            r.load_s = time.monotonic() - r.started
            r.state = LOADED
            r.last_used = time.monotonic()
            if r.charged_mb > r.need_mb:
                log.warning(
                    "model uses more memory than estimated",
                    extra={"model": r.name, "estimated_mb": r.need_mb, "resident_mb": measured},
                )
                # The estimate was short: idle models leave until the budget holds again (if
                # none can, the pool stays over it, and says so in the log and its snapshot).
                try:
                    self._make_room(0.0, r.name)
                except NoRoom:
                    log.error("model memory budget exceeded", extra={"used_mb": self._used()})
            self.peak_mb = max(self.peak_mb, self._used())
            r.done.set()
            self._lock.notify_all()
        log.info(
            "model loaded", extra={"model": r.name, "resident_mb": round(measured, 1), "load_s": r.load_s}
        )
        if self.on_loaded is not None:
            self.on_loaded(served)

    # -- changing the pool ---------------------------------------------------------------------
    def adopt(
        self,
        runtime: LLMRuntime,
        need_mb: float = 0.0,
        pinned: bool = True,
        capabilities: tuple[str, ...] = ("chat", "completion"),
    ) -> ServedModel:
        """Serve a runtime built elsewhere (the echo runtime of tests) as a loaded member of the pool,
        with the capability tags routing looks at."""
        served = ServedModel(runtime, max_queue=self.max_queue)
        spec = ModelSpec(
            name=runtime.name,
            file="",
            sha256=None,
            size=None,
            context_length=runtime.context_length,
            capabilities=tuple(capabilities),
        )
        with self._lock:
            old = self._models.pop(runtime.name.lower(), None)
            if need_mb:
                self._make_room(need_mb, runtime.name)
            r = Resident(runtime.name, spec, Path(), need_mb, pinned=pinned, state=LOADED, served=served)
            r.last_used = time.monotonic()
            r.done.set()
            self._models[runtime.name.lower()] = r
            self.peak_mb = max(self.peak_mb, self._used())
        if old is not None and old.served is not None and old.served is not served:
            old.served.close()
        return served

    def flip(self, name: str, target: str) -> bool:
        """Blue-green: from now on `name` is served by the resident model `target` (preloaded beside
        it), in one step under the lock. Requests already on the model that served `name` finish
        there; it passes its pin to `target` and drains in the background (see `retire`). False, and
        nothing changed, when `target` is not loaded."""
        key, tkey = name.lower(), target.lower()
        with self._lock:
            new = self._models.get(tkey)
            if new is None or new.state != LOADED:
                return False
            old = self._find(key)
            self._links[key] = tkey
            if old is None or old is new:
                return True
            if old.pinned:
                new.pinned = True
            self._retire(old)
        return True

    def retire(self, name: str) -> bool:
        """Stop serving the model resident under `name` without cutting anyone off: the next request
        for `name` resolves afresh (the registry's new version), requests on the old one finish, and
        it is unloaded once idle (until then it counts in the budget). False when none was resident."""
        with self._lock:
            r = self._find(name.lower())
            if r is None or r.state != LOADED:
                return False
            self._links.pop(name.lower(), None)
            self._retire(r)
        return True

    def _retire(self, r: Resident) -> None:
        """Under the lock: re-key `r` out of its name's way, unpinned, and drain it in a thread."""
        old_keys = {key for key, held in self._models.items() if held is r}
        for key in old_keys:
            del self._models[key]
        for key, target in list(self._links.items()):
            if target in old_keys:  # nothing is served by a retired model
                del self._links[key]
        self._retired += 1
        r.name = f"{r.name}~retired{self._retired}"
        r.pinned = False
        self._models[r.name.lower()] = r
        threading.Thread(target=self._drain, args=(r,), name=f"model-drain-{r.name}", daemon=True).start()

    def _drain(self, r: Resident, poll_s: float = 0.05, limit_s: float = 3600.0) -> None:
        deadline = time.monotonic() + limit_s
        while r.served is not None and r.served.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(poll_s)
        with self._lock:
            if self._models.get(r.name.lower()) is not r:  # evicted meanwhile
                return
            r.state = UNLOADING  # counted in the budget until its memory is freed
        assert r.served is not None
        r.served.close()
        with self._lock:
            if self._models.get(r.name.lower()) is r:
                del self._models[r.name.lower()]
        log.info("retired model unloaded after draining", extra={"model": r.name})

    def pin(self, name: str, pinned: bool = True) -> None:
        with self._lock:
            if (r := self._models.get(name.lower())) is not None:
                r.pinned = pinned

    def remove(self, name: str) -> None:
        """Unload `name` whatever its state (requests holding a slot finish first)."""
        with self._lock:
            r = self._models.get(name.lower())
            if r is None:
                return
            if r.state != LOADED:  # loading (its thread closes what it loads) or failed
                self._models.pop(name.lower(), None)
                return
            r.state = UNLOADING  # still counted in the budget until its memory is freed
        assert r.served is not None
        r.served.close()
        with self._lock:
            if self._models.get(name.lower()) is r:
                del self._models[name.lower()]

    def close(self) -> None:
        with self._lock:
            models, self._models = list(self._models.values()), {}
        for r in models:
            if r.served is not None:
                r.served.close()
