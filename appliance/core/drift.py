"""Drift: checks whether a collection's current answers are unlike a reference window, on a schedule
or on demand, keeps each check, and exports the verdicts as gauges."""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np

from appliance.config import DriftSettings
from appliance.core.access import Scope
from appliance.db.traces import SignalRows, TraceStore
from appliance.errors import InvalidInput
from appliance.evaluate import drift as stats
from appliance.observability.metrics import Metrics
from appliance.records import DriftReport, DriftSignal, Window

log = logging.getLogger(__name__)

# (signal, SignalRows field, yes/no signal)
SCALAR_SIGNALS = (
    ("top_similarity", "top_similarity", False),
    ("refusal_rate", "refused", True),
    ("answer_length", "answer_chars", False),
    ("latency", "latency_ms", False),
    ("thumbs_down_rate", "thumbs_down", True),
)


def parse_time(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 time (a date alone is its midnight; no offset is UTC), or a clear 400."""
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name}: {value!r} is not an ISO 8601 time (e.g. 2025-03-04T09:00:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Drift:
    """Drift checks per collection over the stored answer traces (statistics: evaluate/drift.py)."""

    def __init__(self, settings: DriftSettings, store: TraceStore, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self._last_scheduled: datetime | None = None
        self._lock = threading.Lock()  # one check at a time: the schedule and a manual one may meet
        s = settings
        self.thresholds = stats.Thresholds(
            p_value=s.p_value,
            psi=s.psi_threshold,
            mmd2=s.min_mmd2,
            auc=s.auc_threshold,
            min_samples=s.min_samples,
            permutations=s.permutations,
            classifier=s.classifier,
        )

    def start(self) -> None:
        """Gauges from the latest stored checks, so a restart does not forget a drift."""
        for report in self.store.latest_checks(None):
            self._publish(report)

    # -- reading ---------------------------------------------------------------------------------
    def latest(self, scope: Scope, collection: str | None = None) -> list[DriftReport]:
        """The latest check of each collection the caller sees (or of `collection`)."""
        names = scope.collections([collection] if collection else None)
        return self.store.latest_checks(names)

    # -- checking --------------------------------------------------------------------------------
    def default_windows(self, now: datetime | None = None) -> tuple[Window, Window]:
        """The settings' windows: the current one ends now; the reference precedes it (a span of
        days, or the first N answers after a time)."""
        now = now or datetime.now(UTC)
        s = self.settings
        current_start = now - timedelta(days=s.current_days)
        current = Window(start=current_start.isoformat(), end=now.isoformat())
        if s.reference_first_n:
            after = parse_time(s.reference_after, "drift.reference_after")
            reference = Window(
                start=after.isoformat() if after else None,
                end=current_start.isoformat(),
                first_n=s.reference_first_n,
            )
        else:
            reference = Window(
                start=(current_start - timedelta(days=s.reference_days)).isoformat(),
                end=current_start.isoformat(),
            )
        return reference, current

    def check(
        self,
        scope: Scope,
        collection: str,
        reference: Window | None = None,
        current: Window | None = None,
    ) -> DriftReport:
        """Check one collection now (admin), over the given windows or the settings' ones."""
        scope.require_admin()
        scope.collections([collection])
        default_reference, default_current = self.default_windows()
        return self.run(collection, reference or default_reference, current or default_current, "manual")

    def run(self, collection: str, reference: Window, current: Window, trigger: str) -> DriftReport:
        """Compare the windows on every signal, store the report and set the gauges."""
        ref_ids = self._ids(collection, reference, "reference")
        cur_ids = self._ids(collection, current, "current")
        overlap = set(ref_ids) & set(cur_ids)
        if overlap:
            raise InvalidInput(f"the reference and current windows share {len(overlap)} answers")
        rng = np.random.default_rng(self.settings.seed)
        cap = self.settings.max_samples
        ref = self.store.signals([ref_ids[i] for i in stats.sample(len(ref_ids), cap, rng)])
        cur = self.store.signals([cur_ids[i] for i in stats.sample(len(cur_ids), cap, rng)])
        with self._lock:
            signals = [self._embedding(ref, cur)]
            for name, column, binary in SCALAR_SIGNALS:
                tested = stats.scalar_drift(
                    name, getattr(ref, column), getattr(cur, column), self.thresholds, binary
                )
                signals.append(DriftSignal(**_fields(tested)))
        report = DriftReport(
            id="drift_" + uuid.uuid4().hex[:16],
            collection=collection,
            checked_at=datetime.now(UTC).isoformat(),
            trigger=trigger,
            reference=reference,
            current=current,
            drifted=any(s.drifted for s in signals),
            signals=signals,
        )
        self.store.save_check(report)
        self._publish(report)
        if report.drifted:
            log.warning(
                "drift detected",
                extra={"collection": collection, "signals": [s.signal for s in signals if s.drifted]},
            )
        return report

    def _ids(self, collection: str, window: Window, name: str) -> list[str]:
        start = parse_time(window.start, f"{name}.start")
        end = parse_time(window.end, f"{name}.end")
        if start is not None and end is not None and start >= end:
            raise InvalidInput(f"{name}: start must be before end")
        if window.first_n is not None and window.first_n < 1:
            raise InvalidInput(f"{name}.first_n must be >= 1")
        if window.first_n is None and start is None:
            raise InvalidInput(f"{name}: give start (and end), or first_n")
        return self.store.window_ids(collection, start, end, window.first_n)

    def _embedding(self, ref: SignalRows, cur: SignalRows) -> DriftSignal:
        a, b = ref.embeddings, cur.embeddings
        if len(a) and len(b) and a.shape[1] != b.shape[1]:
            tested = stats.SignalTest(
                "embedding", "mmd", None, None, None, None, len(a), len(b), None, None, False,
                f"the embedding model changed between the windows ({a.shape[1]}-d and {b.shape[1]}-d)",
            )  # fmt: skip
        else:
            tested = stats.embedding_drift(a, b, self.thresholds, self.settings.seed)
        return DriftSignal(**_fields(tested))

    def _publish(self, report: DriftReport) -> None:
        for s in report.signals:
            self.metrics.set_drift(report.collection, s.signal, s.drifted, s.p_value, s.psi)

    # -- the schedule ----------------------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> list[DriftReport]:
        """Called every minute: when a scheduled check is due, check each collection answered in
        the current window. Returns the reports made."""
        hours = self.settings.check_interval_hours
        if hours <= 0:
            return []
        now = now or datetime.now(UTC)
        if self._last_scheduled is None:
            self._last_scheduled = self.store.last_check_at("schedule")
        if self._last_scheduled is not None and now - self._last_scheduled < timedelta(hours=hours):
            return []
        self._last_scheduled = now
        reference, current = self.default_windows(now)
        reports = []
        for collection in self.store.collections_answered(parse_time(current.start, "current.start")):
            try:
                reports.append(self.run(collection, reference, current, "schedule"))
            except Exception:
                log.exception("scheduled drift check failed", extra={"collection": collection})
        return reports


def _fields(tested: stats.SignalTest) -> dict:
    return dataclasses.asdict(tested)
