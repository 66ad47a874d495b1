"""Shadows of chat model families: live production requests mirrored to another version off the
hot path (a bounded queue, dropped when full, standing aside while production works), the pairs of
outputs stored and compared; and what canaries and shadows share (preloading the version, audit
entries, the stream wrapper that reports how a production chat ended)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from appliance.config import Settings
from appliance.core.access import Scope
from appliance.core.registry import Registry
from appliance.db.rollouts import RolloutStore
from appliance.errors import ApplianceError, Conflict, InvalidInput
from appliance.models.rollout import answer_similarity, citation_overlap
from appliance.models.runtime import ChatMessage, GenerationParams, StreamStats, TokenStream
from appliance.models.service import ModelService
from appliance.models.shadow import ShadowMirror
from appliance.observability.audit import AuditLog
from appliance.registry_records import ShadowPair, ShadowReport, ShadowState

log = logging.getLogger(__name__)

SHADOW_ALIAS, PRODUCTION = "shadow", "production"
_PROMPT_CHARS = 4000  # of the user's last message, kept with a shadow pair
_PAUSE_S = 0.005  # how often a shadow standing aside for production looks again
_MAX_PAUSE_S = 120.0  # a shadow request paused this long in all is abandoned (recorded as an error)


@dataclass(frozen=True, slots=True)
class Mirrored:
    """A production chat that ended, to be asked again of the shadow version."""

    family: str
    version: int
    production_model: str
    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    output: str
    production_ms: float | None


class Shadows:
    """The shadow of each family (at most one version, a share of production's chats)."""

    def __init__(
        self,
        settings: Settings,
        store: RolloutStore,
        registry: Registry,
        models: ModelService,
        audit: AuditLog,
        family_of: Callable[[str, dict], str | None],
    ) -> None:
        self.store = store
        self.registry = registry
        self.models = models
        self.audit = audit
        # The family key whose production a requested model name means, among those given.
        self.family_of = family_of
        self._shadows: dict[str, dict] = {}  # family key -> {version, share, ...}
        self._rng = random.Random()
        self.mirror = ShadowMirror(self._run_shadow, settings.registry.shadow_queue, name="shadow-mirror")

    def start(self) -> None:
        for row in self.store.shadows():
            self._shadows[row["family"]] = row
        self.mirror.start()

    def close(self) -> None:
        self.mirror.stop()

    def pick(self, model: str) -> tuple[str, int] | None:
        """(family, version) to mirror a plain chat of `model` to, drawn by the shadow's share; None
        for most requests when no family has a shadow."""
        if not self._shadows:
            return None
        family = self.family_of(model, self._shadows)
        setting = self._shadows.get(family) if family is not None else None
        if setting is not None and self._rng.random() < setting["share"]:
            return family, setting["version"]
        return None

    def set_shadow(
        self, scope: Scope, name: str, version: int | None, share: float = 1.0, reason: str = ""
    ) -> ShadowState | None:
        """Mirror `share` (0..1] of the family's production chat requests to `version` (None: stop)."""
        scope.require_admin()
        family = self.registry.registry.family(name)
        if version is None:
            if family.name.lower() not in self._shadows:
                raise Conflict(f"{family.name} has no shadow")
            self.store.set_shadow(family.name, None, 0.0, actor_of(scope))
            self._shadows.pop(family.name.lower(), None)
            move = self.registry.registry.store.move_alias(
                family.name,
                SHADOW_ALIAS,
                None,
                action="remove",
                actor=actor_of(scope),
                reason=reason or "shadow stopped",
            )
            audit_event(
                self.audit,
                scope.principal,
                "shadow-stop",
                family.name,
                None,
                {"history_id": move.id},
                action="model.shadow",
            )
            return None
        if not 0 < share <= 1:
            raise InvalidInput("share must be above 0 and at most 1 (1: every request)", param="share")
        if family.kind != "chat":
            raise InvalidInput(f"{family.name} is a {family.kind} model: shadows are for chat models")
        target = self.registry.registry.store.version(family.name, version)
        if target.state != "ready":
            raise Conflict(
                f"{family.name} version {version} is {target.state}: only a ready version is shadowed"
            )
        if family.aliases.get(PRODUCTION) == version:
            raise Conflict(f"{family.name} version {version} is production: shadow another version")
        self.store.set_shadow(family.name, version, share, actor_of(scope))
        move = self.registry.registry.store.move_alias(
            family.name,
            SHADOW_ALIAS,
            version,
            action="shadow",
            actor=actor_of(scope),
            reason=reason or f"shadow {share:.0%} of production",
        )
        self._shadows[family.name.lower()] = next(
            r for r in self.store.shadows() if r["family"] == family.name.lower()
        )
        warm(self.models, family.name, version)
        audit_event(
            self.audit,
            scope.principal,
            "shadow",
            family.name,
            version,
            {"share": share, "history_id": move.id},
            action="model.shadow",
        )
        return self.state(family.name)

    def state(self, name: str) -> ShadowState | None:
        row = self._shadows.get(name.lower())
        if row is None:
            return None
        return ShadowState(
            name=self.registry.registry.family(name).name,
            version=row["version"],
            share=row["share"],
            actor=row["actor"],
            updated_at=row["updated_at"],
            queue=self.mirror.snapshot(),
        )

    def report(self, scope: Scope, name: str, recent: int = 10) -> ShadowReport:
        family = self.registry.registry.family(name)
        state = self.state(family.name)
        version = state.version if state is not None else self.store.last_shadow_version(family.name)
        if version is None:
            return ShadowReport(
                name=family.name,
                shadow=None,
                version=None,
                pairs=0,
                errors=0,
                mean_similarity=None,
                median_similarity=None,
                agreement_rate=None,
                mean_citation_overlap=None,
                p95_production_ms=None,
                p95_shadow_ms=None,
                recent=[],
            )
        stats = self.store.pair_stats(family.name, version)
        pairs = [
            ShadowPair(
                id=p["id"],
                shadow_version=p["shadow_version"],
                production_model=p["production_model"],
                prompt=p["prompt"],
                production_output=p["production_output"],
                shadow_output=p["shadow_output"],
                similarity=p["similarity"],
                citation_overlap=p["citation_overlap"],
                production_ms=p["production_ms"],
                shadow_ms=p["shadow_ms"],
                error=p["error"],
                at=p["created_at"],
            )
            for p in self.store.recent_pairs(family.name, version, recent)
        ]
        return ShadowReport(name=family.name, shadow=state, version=version, recent=pairs, **stats)

    def _run_shadow(self, item: Mirrored) -> None:
        """On the mirror's worker: the same messages to the shadow version; the pair is stored."""
        fields: dict = {
            "shadow_version": item.version,
            "production_model": item.production_model,
            "prompt": next((m.content for m in reversed(item.messages) if m.role == "user"), "")[
                :_PROMPT_CHARS
            ],
            "production_output": item.output,
            "production_ms": item.production_ms,
        }
        start = time.monotonic()
        try:
            served = self.models.runtime_for(f"{item.family}@{item.version}")
            prompt = served.render_chat(list(item.messages))
            text, paused = self._generate_yielding(served, prompt, item.params)
            fields["shadow_output"] = text
            # What the shadow itself took: the time it stood aside for production is not its latency.
            fields["shadow_ms"] = round((time.monotonic() - start - paused) * 1000, 2)
            fields["similarity"] = answer_similarity(item.output, text)
            fields["citation_overlap"] = citation_overlap(item.output, text)
        except Exception as exc:
            fields["error"] = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
        self.store.add_pair(item.family, fields)

    def _generate_yielding(self, served, prompt: str, params: GenerationParams) -> tuple[str, float]:
        """Generate on the shadow model one token at a time, standing aside while any other model has
        requests in flight: on a box whose cores production needs, the shadow only uses idle time
        (a backend computes a token when asked for it, so a paused stream costs no compute). Gives up
        after `_MAX_PAUSE_S` of waiting in all. Returns the text and the seconds spent paused."""
        paused = 0.0
        parts: list[str] = []
        self._wait_idle(served.name)
        stream = served.stream(prompt, params)
        try:
            for delta in stream:
                parts.append(delta.text)
                if delta.finish_reason is not None:
                    break
                paused += self._wait_idle(served.name, paused)
        finally:
            stream.close()
        return "".join(parts), paused

    def _wait_idle(self, shadow_name: str, paused: float = 0.0) -> float:
        waited = 0.0
        while self._production_busy(shadow_name):
            if paused + waited >= _MAX_PAUSE_S or self.mirror.stopping:
                raise TimeoutError(
                    f"production stayed busy for {_MAX_PAUSE_S:.0f} s: shadow request abandoned"
                )
            time.sleep(_PAUSE_S)
            waited += _PAUSE_S
        return waited

    def _production_busy(self, shadow_name: str) -> bool:
        return self.models.pool.busy_besides(shadow_name)


def warm(models: ModelService, family: str, version: int) -> None:
    """Start loading the version a canary or shadow will send requests to, so its first ones do
    not wait for a cold load (what cannot load now loads on first use, and says why there)."""
    try:
        models.preload(f"{family}@{version}")
    except ApplianceError as exc:
        log.warning(
            "the version could not be preloaded",
            extra={"model": family, "version": version, "error": exc.detail},
        )


def audit_event(
    audit: AuditLog,
    principal,
    what: str,
    family: str,
    version: int | None,
    detail: dict,
    actor: str | None = None,
    outcome: str = "ok",
    action: str = "model.canary",
) -> None:
    audit.append(
        action,
        principal=principal,
        key_id=None if principal is not None else "system",
        key_name=None if principal is not None else actor,
        outcome=outcome,
        target=f"{family}@{version}" if version is not None else family,
        detail={"event": what, **detail},
    )


class Watched(TokenStream):
    """A stream passed through as it is, calling `ended(ok, text, stats)` once when it finishes or fails
    (not when the caller stops reading early: that tells nothing about the model)."""

    def __init__(self, inner: TokenStream, ended: Callable[[bool, str, StreamStats | None], None]) -> None:
        self._inner = inner
        parts: list[str] = []

        def source(ts: TokenStream):
            try:
                for delta in inner:
                    parts.append(delta.text)
                    if delta.finish_reason is not None:
                        ts.stats = inner.stats
                        if delta.finish_reason != "cancelled":
                            _safely(ended, True, "".join(parts), inner.stats)
                    yield delta
            except GeneratorExit:
                raise
            except Exception:
                _safely(ended, False, "", None)
                raise

        super().__init__(source, inner.close)

    def close(self) -> None:
        self._inner.close()
        super().close()


def _safely(ended, *args) -> None:
    try:
        ended(*args)
    except Exception:  # the production stream never fails for its bookkeeping
        log.exception("rollout bookkeeping failed")


def actor_of(scope: Scope) -> str:
    p = scope.principal
    return f"{p.name} ({p.key_id})" if p.name else p.key_id
