"""Safe rollout's pure rules: canary schedules, sticky assignment, per-step analysis, shadow agreement.

Nothing here touches a store or a model: the rollout service (appliance/core/rollout.py) keeps the
state durable and calls these. A canary sends `weight` percent of a family's production traffic to
a candidate version; each caller (API key) lands in a fixed bucket in [0, 100) for the rollout, so
a key on the candidate stays there as the weight grows, and a key's answers do not flip between
versions from one request to the next.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from appliance.errors import InvalidInput

CANDIDATE, STABLE = "candidate", "stable"
RUNNING, PROMOTED, ROLLED_BACK, CANCELLED = "running", "promoted", "rolled_back", "cancelled"
# A numbered citation in an answer: [1], [2, 3].
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_WORD = re.compile(r"\w+", re.UNICODE)


def parse_steps(raw: str | Sequence[int]) -> list[int]:
    """A weight schedule: percentages, strictly increasing, each in 1..100, ending at 100 (the last
    step is the full rollout, after which the candidate becomes production)."""
    if isinstance(raw, str):
        try:
            steps = [int(s.strip().rstrip("%")) for s in raw.split(",") if s.strip()]
        except ValueError:
            raise InvalidInput(
                f"steps {raw!r}: give percentages separated by commas, e.g. 5,25,50,100", param="steps"
            ) from None
    else:
        steps = [int(s) for s in raw]
    if not steps:
        raise InvalidInput("a canary needs at least one step, e.g. 5,25,50,100", param="steps")
    if len(steps) > 20:
        raise InvalidInput("a canary has at most 20 steps", param="steps")
    if any(s < 1 or s > 100 for s in steps):
        raise InvalidInput(f"steps {steps}: each is a percentage from 1 to 100", param="steps")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise InvalidInput(
            f"steps {steps}: each step must send more traffic than the one before", param="steps"
        )
    if steps[-1] != 100:
        raise InvalidInput(
            f"steps {steps}: the last step must be 100 (the candidate then becomes production)", param="steps"
        )
    return steps


def bucket(key_id: str, rollout_id: str) -> float:
    """The caller's fixed place in [0, 100) for this rollout: a hash of both, so a key's place is
    stable for the rollout's life and unrelated between rollouts."""
    digest = hashlib.sha256(f"{rollout_id}\x00{key_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def arm_for(key_id: str, rollout_id: str, weight: int) -> str:
    return CANDIDATE if bucket(key_id, rollout_id) < weight else STABLE


@dataclass(frozen=True, slots=True)
class Criteria:
    """What a step must show before the canary goes on (see `analyse`)."""

    min_samples: int = 50  # candidate requests per step (and stable requests over the rollout)
    alpha: float = 0.05  # a difference counts only when a one-sided test finds it this unlikely by chance
    max_error_rate: float = (
        0.05  # without a stable baseline: the candidate's own error rate may not pass this
    )
    error_margin: float = 0.01  # and with one: the candidate may be this much worse before it counts
    latency_tolerance: float = 0.25  # p95 may be this fraction slower than stable's ...
    latency_floor_s: float = 0.05  # ... plus this much (noise on very short requests)
    min_ratings: int = 10  # rated answers per arm before the thumbs-down rate is compared


@dataclass(slots=True)
class ArmStats:
    """What one arm's requests did: how many, how many failed, and the latencies of those that did not."""

    requests: int = 0
    errors: int = 0
    ttft_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)

    def add(self, ok: bool, ttft_s: float | None, total_s: float | None) -> None:
        self.requests += 1
        if not ok:
            self.errors += 1
            return
        if ttft_s is not None:
            self.ttft_s.append(ttft_s)
        if total_s is not None:
            self.total_s.append(total_s)

    def summary(self, ratings: tuple[int, int] | None = None) -> dict:
        down, rated = ratings or (0, 0)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.errors / self.requests, 4) if self.requests else None,
            "p95_first_token_ms": _p95_ms(self.ttft_s),
            "p95_total_ms": _p95_ms(self.total_s),
            "rated": rated,
            "thumbs_down_rate": round(down / rated, 4) if rated else None,
        }


def _p95_ms(values: list[float]) -> float | None:
    return round(float(np.percentile(values, 95)) * 1000, 2) if values else None


class Tally:
    """Per-step candidate stats and the stable arm's over the whole rollout (stable does not change
    between steps, so its baseline keeps growing; at 100% it gets no traffic, and the earlier
    steps' baseline is what the candidate is held to). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.candidate = ArmStats()
        self.stable = ArmStats()

    def add(self, arm: str, ok: bool, ttft_s: float | None, total_s: float | None) -> int:
        """Record one request; returns the candidate's requests in this step."""
        with self._lock:
            (self.candidate if arm == CANDIDATE else self.stable).add(ok, ttft_s, total_s)
            return self.candidate.requests

    def next_step(self) -> None:
        with self._lock:
            self.candidate = ArmStats()

    def snapshot(self) -> tuple[ArmStats, ArmStats]:
        with self._lock:
            c, s = self.candidate, self.stable
            return (
                ArmStats(c.requests, c.errors, list(c.ttft_s), list(c.total_s)),
                ArmStats(s.requests, s.errors, list(s.ttft_s), list(s.total_s)),
            )


def ready_to_analyse(candidate: ArmStats, stable: ArmStats, weight: int, criteria: Criteria) -> bool:
    """A step is analysed once the candidate has its minimum sample, and (below 100%, where stable
    still gets traffic) stable has one too."""
    if candidate.requests < criteria.min_samples:
        return False
    return weight >= 100 or stable.requests >= criteria.min_samples


def analyse(
    candidate: ArmStats,
    stable: ArmStats,
    criteria: Criteria,
    ratings: tuple[tuple[int, int], tuple[int, int]] | None = None,
) -> tuple[bool, list[dict]]:
    """Whether the candidate may go on, and each check: error rate (Fisher's exact test against
    stable, or an absolute bound while stable has too few requests), p95 first-token and total
    latency (Mann-Whitney U against stable, and p95 beyond the tolerance), thumbs-down rate
    (Fisher's exact test, once both arms have enough rated answers). A check without the data it
    needs is reported as skipped, never as passed on nothing."""
    checks = [_error_check(candidate, stable, criteria)]
    checks.append(_latency_check("p95_first_token", candidate.ttft_s, stable.ttft_s, criteria))
    checks.append(_latency_check("p95_total", candidate.total_s, stable.total_s, criteria))
    checks.append(_ratings_check(ratings, criteria))
    return all(c["passed"] is not False for c in checks), checks


def _error_check(c: ArmStats, s: ArmStats, criteria: Criteria) -> dict:
    rate = c.errors / c.requests if c.requests else 0.0
    if s.requests < criteria.min_samples:
        passed = rate <= criteria.max_error_rate
        return {
            "name": "error_rate",
            "passed": passed,
            "p_value": None,
            "detail": f"candidate {c.errors}/{c.requests} failed ({rate:.1%}); no stable baseline, "
            f"bound {criteria.max_error_rate:.1%}",
        }
    base = s.errors / s.requests
    p = float(
        stats.fisher_exact(
            [[c.errors, c.requests - c.errors], [s.errors, s.requests - s.errors]], alternative="greater"
        ).pvalue
    )
    passed = not (p < criteria.alpha and rate - base > criteria.error_margin)
    return {
        "name": "error_rate",
        "passed": passed,
        "p_value": round(p, 6),
        "detail": f"candidate {rate:.1%} ({c.errors}/{c.requests}) vs stable {base:.1%} "
        f"({s.errors}/{s.requests}), Fisher p={p:.3g}",
    }


def _latency_check(name: str, cand: list[float], stable: list[float], criteria: Criteria) -> dict:
    if len(cand) < criteria.min_samples // 2 or len(stable) < criteria.min_samples // 2:
        return {
            "name": name,
            "passed": None,
            "p_value": None,
            "detail": f"skipped: {len(cand)} candidate and {len(stable)} stable timings",
        }
    c95, s95 = float(np.percentile(cand, 95)), float(np.percentile(stable, 95))
    limit = s95 * (1 + criteria.latency_tolerance) + criteria.latency_floor_s
    p = float(stats.mannwhitneyu(cand, stable, alternative="greater").pvalue)
    passed = not (c95 > limit and p < criteria.alpha)
    return {
        "name": name,
        "passed": passed,
        "p_value": round(p, 6),
        "detail": f"candidate {c95 * 1000:.1f} ms vs stable {s95 * 1000:.1f} ms (limit {limit * 1000:.1f} ms), "
        f"Mann-Whitney p={p:.3g}",
    }


def _ratings_check(ratings: tuple[tuple[int, int], tuple[int, int]] | None, criteria: Criteria) -> dict:
    if ratings is None:
        return {"name": "thumbs_down_rate", "passed": None, "p_value": None, "detail": "skipped: no ratings"}
    (cd, cn), (sd, sn) = ratings
    if cn < criteria.min_ratings or sn < criteria.min_ratings:
        return {
            "name": "thumbs_down_rate",
            "passed": None,
            "p_value": None,
            "detail": f"skipped: {cn} candidate and {sn} stable ratings (need {criteria.min_ratings} each)",
        }
    p = float(stats.fisher_exact([[cd, cn - cd], [sd, sn - sd]], alternative="greater").pvalue)
    passed = not (p < criteria.alpha and cd / cn > sd / sn)
    return {
        "name": "thumbs_down_rate",
        "passed": passed,
        "p_value": round(p, 6),
        "detail": f"candidate {cd}/{cn} down vs stable {sd}/{sn}, Fisher p={p:.3g}",
    }


# -- shadow agreement ------------------------------------------------------------------------------
def answer_similarity(a: str, b: str) -> float:
    """How alike two answers read, in [0, 1]: the matching share of their word sequences (1: the
    same words in the same order; case and punctuation ignored)."""
    wa, wb = _WORD.findall(a.lower()), _WORD.findall(b.lower())
    if not wa and not wb:
        return 1.0
    return round(difflib.SequenceMatcher(None, wa, wb, autojunk=False).ratio(), 4)


def citations(text: str) -> set[int]:
    return {int(n) for m in _CITATION.finditer(text) for n in re.split(r"\s*,\s*", m.group(1))}


def citation_overlap(a: str, b: str) -> float | None:
    """Jaccard overlap of the numbered citations of two answers; None when neither cites."""
    ca, cb = citations(a), citations(b)
    if not ca and not cb:
        return None
    return round(len(ca & cb) / len(ca | cb), 4)
