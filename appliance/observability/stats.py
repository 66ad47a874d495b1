"""Live operating statistics for the admin dashboard: a sampler of the process metrics into a bounded ring."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from appliance.observability.metrics import Metrics

# Rates and percentiles are taken over the last minute, the window an operator reads as "now".
WINDOW_SECONDS = 60.0
# Percentiles come from these stages of rag_query_latency_seconds: a search is "retrieval",
# a cited answer "total".
LATENCY_STAGES = {"search": "retrieval", "answer": "total"}


@dataclass(frozen=True, slots=True)
class Reading:
    """Cumulative counters and current gauges at one instant."""

    at: float  # time.monotonic()
    wall: float  # time.time(), for clients that draw a time axis
    queries: float
    requests: float
    completion_tokens: float
    decode_sum: float
    decode_count: float
    latency: dict[str, dict[float, float]] = field(default_factory=dict)  # name -> {le: cumulative count}
    gauges: dict[str, float] = field(default_factory=dict)


def read_metrics(metrics: Metrics, gauges: Mapping[str, float]) -> Reading:
    queries = requests = tokens = decode_sum = decode_count = 0.0
    latency: dict[str, dict[float, float]] = {name: {} for name in LATENCY_STAGES}
    by_stage = {stage: name for name, stage in LATENCY_STAGES.items()}
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == "rag_queries_total" and s.labels.get("mode") != "answer":
                # An answer runs one retrieval, counted under its mode: count retrievals once each.
                queries += s.value
            elif s.name == "http_requests_total":
                requests += s.value
            elif s.name == "llm_tokens_total" and s.labels.get("kind") == "completion":
                tokens += s.value
            elif s.name == "llm_tokens_per_second_sum":
                decode_sum += s.value
            elif s.name == "llm_tokens_per_second_count":
                decode_count += s.value
            elif s.name == "rag_query_latency_seconds_bucket" and s.labels.get("stage") in by_stage:
                buckets = latency[by_stage[s.labels["stage"]]]
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    return Reading(
        time.monotonic(),
        time.time(),
        queries,
        requests,
        tokens,
        decode_sum,
        decode_count,
        latency,
        dict(gauges),
    )


def quantile(q: float, earlier: Mapping[float, float], later: Mapping[float, float]) -> float | None:
    """The q-quantile (seconds) of the observations between two cumulative histogram readings,
    interpolated within its bucket as Prometheus' histogram_quantile does; None without observations."""
    bounds = sorted(later)
    counts = [later[le] - earlier.get(le, 0.0) for le in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for le, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if math.isinf(le):
                return lower  # beyond the last finite bucket: its bound is the best we know
            inside = cumulative - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, cumulative
    return lower


def rates(earlier: Reading, later: Reading) -> dict:
    """What happened between two readings, per minute or per second as an operator reads it."""
    span = max(later.at - earlier.at, 1e-9)
    decoded = later.decode_count - earlier.decode_count
    out: dict = {
        "window_seconds": round(span, 1),
        "queries_per_min": round((later.queries - earlier.queries) / span * 60, 2),
        "requests_per_min": round((later.requests - earlier.requests) / span * 60, 2),
        "tokens_per_second": round((later.completion_tokens - earlier.completion_tokens) / span, 2),
        "decode_tokens_per_second": round((later.decode_sum - earlier.decode_sum) / decoded, 2)
        if decoded
        else None,
        "latency_ms": {},
    }
    for name in LATENCY_STAGES:
        before, after = earlier.latency.get(name, {}), later.latency.get(name, {})
        p50, p95 = quantile(0.5, before, after), quantile(0.95, before, after)
        out["latency_ms"][name] = {
            "p50": round(p50 * 1000, 1) if p50 is not None else None,
            "p95": round(p95 * 1000, 1) if p95 is not None else None,
        }
    return out


def process_memory() -> dict:
    """Resident memory of this process, and GPU memory in use when CUDA is already initialised."""
    out: dict = {"rss_bytes": None, "gpu_used_bytes": None, "gpu_total_bytes": None}
    try:
        with open("/proc/self/statm") as f:
            out["rss_bytes"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    torch = sys.modules.get("torch")  # never imported for this: importing torch costs seconds
    try:
        # Only once something else initialised CUDA: asking first would create a context (~300 MB).
        if torch is not None and torch.cuda.is_initialized():
            free, total = torch.cuda.mem_get_info()
            out["gpu_used_bytes"], out["gpu_total_bytes"] = int(total - free), int(total)
    except Exception:  # a driver hiccup must not break the dashboard
        pass
    return out


class StatsSampler:
    """Reads the metrics every `interval` seconds into a ring of `keep` readings (10 minutes by
    default), from which the dashboard gets its current rates and its sparklines."""

    def __init__(
        self,
        metrics: Metrics,
        gauges: Callable[[], Mapping[str, float]],
        interval: float = 5.0,
        keep: int = 120,
    ) -> None:
        self.metrics = metrics
        self.gauges = gauges
        self.interval = interval
        self.started_at = time.time()
        self._ring: deque[Reading] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="stats-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # a failed reading leaves a gap in the sparkline, nothing worse
                pass

    def _reading(self) -> Reading:
        gauges = dict(self.gauges())
        gauges.update({k: float(v) for k, v in process_memory().items() if v is not None})
        return read_metrics(self.metrics, gauges)

    def sample(self) -> Reading:
        reading = self._reading()
        with self._lock:
            self._ring.append(reading)
        return reading

    def snapshot(self) -> dict:
        """Rates over the last minute (against a fresh reading) and the ring as sparkline series."""
        now = self._reading()
        with self._lock:
            ring = list(self._ring)
        base = next((r for r in ring if now.at - r.at <= WINDOW_SECONDS), ring[0] if ring else now)
        current = rates(base, now)
        current["uptime_seconds"] = round(time.time() - self.started_at, 1)
        return {"current": current, "gauges": now.gauges, "history": self._history(ring)}

    def _history(self, ring: list[Reading]) -> dict:
        pairs = list(zip(ring, ring[1:], strict=False))
        series: dict = {
            "interval_seconds": self.interval,
            "queries_per_min": [rates(a, b)["queries_per_min"] for a, b in pairs],
            "tokens_per_second": [rates(a, b)["tokens_per_second"] for a, b in pairs],
            "search_p95_ms": [rates(a, b)["latency_ms"]["search"]["p95"] or 0.0 for a, b in pairs],
        }
        for gauge in ("llm_queue", "jobs_active", "rss_bytes", "gpu_used_bytes"):
            series[gauge] = [r.gauges.get(gauge, 0.0) for r in ring]
        return series


def ingestion_lags(metrics: Metrics) -> dict[str, float]:
    """rag_ingestion_lag_seconds by source, as the ingestion side last set it."""
    return {
        s.labels["source"]: s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "rag_ingestion_lag_seconds"
    }
