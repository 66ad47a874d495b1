"""Routing `model: auto`: rules on capability tags, then a semantic router over example utterances."""

from __future__ import annotations

import re
import threading
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from appliance.errors import InvalidInput

AUTO = "auto"
# The similarity of a query to a route: the mean of its `_TOP` closest examples (one lucky example
# is not enough; the whole route's centroid blurs routes with varied examples).
_TOP = 3
# A fenced block, or a line that reads as code, is a code question whatever the words around it.
_CODE = re.compile(
    r"```|^\s*(def |class |import |from \S+ import |#include|public static|function\s*\w*\(|SELECT .+ FROM )"
    r"|\b(Traceback \(most recent call last\)|SyntaxError|NullPointerException|segmentation fault)",
    re.MULTILINE | re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Route:
    """A kind of request, defined by example utterances; served by a model tagged `tag` ("" : the default)."""

    name: str
    tag: str
    examples: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Which model serves a request, and why: returned as `x-appliance-route` and kept in the trace."""

    model: str  # the name the pool resolves ("default" for the pinned default)
    route: str  # the route's name, "explicit" for a named model, "tools" for the tools rule
    reason: str
    score: float | None = None
    candidates: tuple[str, ...] = ()  # in order: the model, then the fallbacks
    fallback_from: tuple[str, ...] = field(default=())  # models tried first, with why they failed
    # A canary's split (appliance/core/rollout.py): "<rollout id>/candidate" or "<rollout id>/stable".
    rollout: str = ""

    def header(self) -> str:
        """The header's value: `route=code; model=X; score=0.61; reason=...`, ASCII only."""
        parts = [f"route={self.route}", f"model={self.model}"]
        if self.score is not None:
            parts.append(f"score={self.score:.3f}")
        parts.append(f"reason={self.reason}")
        if self.fallback_from:
            parts.append("fell_back_from=" + ", ".join(self.fallback_from))
        if self.rollout:
            parts.append(f"canary={self.rollout.rpartition('/')[2]}")
        text = "; ".join(parts)
        return text.encode("ascii", "replace").decode().replace("\n", " ").replace("\r", " ")


def load_routes(path: Path | None = None) -> tuple[list[Route], str]:
    """The routes and the fallback route's name from a TOML file (the packaged routes.toml by default)."""
    if path is None:
        raw = resources.files("appliance.models").joinpath("routes.toml").read_text(encoding="utf-8")
        where = "appliance/models/routes.toml"
    else:
        raw = Path(path).read_text(encoding="utf-8")
        where = str(path)
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    routes = []
    for i, entry in enumerate(data.get("routes", [])):
        examples = entry.get("examples", [])
        if (
            not isinstance(entry.get("name"), str)
            or not examples
            or not all(isinstance(e, str) for e in examples)
        ):
            raise InvalidInput(f"{where}: routes[{i}] needs a name and a list of example strings")
        routes.append(
            Route(entry["name"], str(entry.get("tag", "")), tuple(examples), entry.get("description", ""))
        )
    fallback = data.get("fallback")
    if fallback not in {r.name for r in routes}:
        raise InvalidInput(f"{where}: fallback {fallback!r} must name one of its routes")
    return routes, fallback


class SemanticRouter:
    """Classifies a text into one of `routes` by the similarity of its embedding to their examples.

    Each route's threshold is calibrated on the examples themselves, leaving each one out in turn:
    of the examples whose best route is R, the threshold keeps those that belong to R and sends the
    others to the fallback route, maximising the examples routed right (the strictest such
    threshold). A text whose best route scores below that route's threshold goes to the fallback.
    """

    def __init__(
        self,
        routes: Sequence[Route],
        fallback: str,
        embed_texts: Callable[[list[str]], np.ndarray],
        embed_query: Callable[[str], np.ndarray],
    ) -> None:
        self.routes = list(routes)
        self.fallback = fallback
        self._embed_texts = embed_texts
        self._embed_query = embed_query
        self._lock = threading.Lock()
        self._examples: list[np.ndarray] | None = None
        self.thresholds: dict[str, float] = {}

    def _ready(self) -> list[np.ndarray]:
        with self._lock:
            if self._examples is None:
                vectors = [
                    np.asarray(self._embed_texts(list(r.examples)), dtype=np.float32) for r in self.routes
                ]
                self.thresholds = self._calibrate(vectors)
                self._examples = vectors
            return self._examples

    def _scores(
        self, vector: np.ndarray, examples: list[np.ndarray], leave_out: tuple[int, int] | None = None
    ):
        scores = np.empty(len(examples), dtype=np.float32)
        for i, ex in enumerate(examples):
            sims = ex @ vector
            if leave_out is not None and leave_out[0] == i:
                sims = np.delete(sims, leave_out[1])
            top = np.sort(sims)[-_TOP:]
            scores[i] = float(top.mean()) if len(top) else -1.0
        return scores

    def _calibrate(self, examples: list[np.ndarray]) -> dict[str, float]:
        # (predicted route, its score, true route) of every example, left out of its own route.
        outcomes: list[tuple[int, float, int]] = []
        for label, vectors in enumerate(examples):
            for j, vector in enumerate(vectors):
                scores = self._scores(vector, examples, (label, j))
                best = int(np.argmax(scores))
                outcomes.append((best, float(scores[best]), label))
        fallback = next(i for i, r in enumerate(self.routes) if r.name == self.fallback)
        thresholds = {}
        for i, route in enumerate(self.routes):
            if i == fallback:
                thresholds[route.name] = -1.0
                continue
            mine = [(score, label) for best, score, label in outcomes if best == i]
            best_t, best_right = -1.0, -1
            # Of the thresholds that route the examples best, the strictest: a text less like the
            # route than any of its own examples is left to the fallback.
            for t in sorted({-1.0} | {s for s, _ in mine} | {s + 1e-6 for s, _ in mine}):
                right = sum(1 for s, lab in mine if (lab == i if s >= t else lab == fallback))
                if right >= best_right:
                    best_t, best_right = t, right
            thresholds[route.name] = round(best_t, 4)
        return thresholds

    def classify(self, text: str, vector: np.ndarray | None = None) -> tuple[Route, float, str]:
        """The route for `text` (its embedding may be given), its score, and why."""
        examples = self._ready()
        if vector is None:
            vector = self._embed_query(text)
        scores = self._scores(np.asarray(vector, dtype=np.float32), examples)
        best = int(np.argmax(scores))
        route, score = self.routes[best], float(scores[best])
        threshold = self.thresholds[route.name]
        if route.name != self.fallback and score < threshold:
            fallback = next(r for r in self.routes if r.name == self.fallback)
            return (
                fallback,
                score,
                f"semantic: best {route.name} {score:.3f} < threshold {threshold:.3f}, fallback",
            )
        return route, score, f"semantic: {route.name} {score:.3f} >= threshold {threshold:.3f}"


def looks_like_code(text: str) -> bool:
    return _CODE.search(text) is not None


class AutoRouter:
    """Decides which model serves a request (see `decide`), over the models a catalogue lists and
    those resident in the pool; the semantic router is built (its examples embedded, its thresholds
    calibrated) on the first request that needs it."""

    def __init__(
        self, embedder, catalogue: Callable[[], list], pool, routes_file: Path | None = None
    ) -> None:
        self.embedder = embedder
        self.catalogue = catalogue
        self.pool = pool
        self.routes_file = routes_file
        self._semantic: SemanticRouter | None = None
        self._lock = threading.Lock()

    @property
    def semantic(self) -> SemanticRouter:
        with self._lock:
            if self._semantic is None:
                routes, fallback = load_routes(self.routes_file)
                self._semantic = SemanticRouter(
                    routes, fallback, self.embedder.embed_documents, self.embedder.embed_query
                )
            return self._semantic

    def route_names(self) -> list[str]:
        try:
            return [r.name for r in self.semantic.routes]
        except InvalidInput:
            return []

    def tagged(self, tag: str, default: str) -> list[str]:
        """Models carrying capability `tag`: the resident ones first (no load to wait for), then the
        catalogue's in its order; the default among them where it has the tag."""
        resident = [
            m for m in self.pool.snapshot()["models"] if m["state"] == "loaded" and tag in m["capabilities"]
        ]
        names = [m["name"] for m in resident]
        for spec in self.catalogue():
            if tag in spec.capabilities and spec.name.lower() not in {n.lower() for n in names}:
                names.append(spec.name)
        return names

    def decide(
        self, model: str, text: str, tools: bool, default: str, vector: np.ndarray | None = None
    ) -> RouteDecision:
        """`model` other than auto: served as named (the default for "default"). `auto`: a request
        offering tools goes to a model tagged `tools`; a message with code in it to one tagged `code`;
        anything else by the semantic router's route and that route's tag. The default model is the
        last candidate, so a routed request falls back to it."""
        wanted = model.strip()
        if wanted.lower() != AUTO:
            name = default if wanted.lower() == "default" else wanted
            return RouteDecision(name, "explicit", "the request names its model", None, (name,))
        score = None
        if tools:
            route, tag, reason = "tools", "tools", "rule: the request offers tools"
        elif looks_like_code(text):
            route, tag, reason = "code", "code", "rule: the message contains code"
        elif not text.strip():
            route, tag, reason = self.semantic.fallback, "", "no text to route on"
        else:
            chosen, score, reason = self.semantic.classify(text, vector)
            route, tag = chosen.name, chosen.tag
        targets = self.tagged(tag, default) if tag else []
        if tag and not targets:
            reason += f"; no model is tagged {tag}: the default serves it"
        candidates = tuple(dict.fromkeys([*targets, default]))
        return RouteDecision(candidates[0], route, reason, score, candidates)
