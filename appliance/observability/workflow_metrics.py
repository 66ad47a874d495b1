"""Prometheus metrics of workflow runs: outcomes, durations, tokens, tool retries, breaker states, approval waits."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily


class WorkflowMetrics:
    """Workflow runs on the appliance's registry: runs by outcome, step durations, tool retries,
    breaker states and approval waits, per workflow (and version where it is known)."""

    def __init__(self, registry) -> None:
        self._registry = registry
        self.runs = Counter(
            "appliance_workflow_runs_total",
            "Workflow runs that ended (or paused), by workflow, version and outcome.",
            ["workflow", "version", "outcome"],
            registry=registry,
        )
        self.run_duration = Histogram(
            "appliance_workflow_run_duration_seconds",
            "Active seconds of a workflow run (waits for approvals excluded), by workflow and outcome.",
            ["workflow", "outcome"],
            buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200),
            registry=registry,
        )
        self.step_duration = Histogram(
            "appliance_workflow_step_duration_seconds",
            "Duration of a workflow step, by kind (tool, agent, llm, foreach, ...) and outcome.",
            ["kind", "outcome"],
            buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 2, 10, 60, 600),
            registry=registry,
        )
        self.tool_retries = Counter(
            "appliance_workflow_tool_retries_total",
            "Tool calls retried, by tool.",
            ["tool"],
            registry=registry,
        )
        self.tokens = Counter(
            "appliance_workflow_tokens_total",
            "Model tokens spent by workflow runs.",
            ["workflow"],
            registry=registry,
        )
        self.approval_wait = Histogram(
            "appliance_workflow_approval_wait_seconds",
            "From an approval's creation to its answer.",
            buckets=(1, 10, 60, 600, 3600, 86400),
            registry=registry,
        )

    def watch_breakers(self, states: Callable[[], Mapping[str, str]]) -> None:
        """Report each tool breaker's state at every scrape (`states`: {tool: closed|open|half_open}),
        read then, since an open breaker turns half-open with time alone."""
        self._registry.register(_BreakerStates(states))


class _BreakerStates:
    """appliance_workflow_breaker_state{tool,state}: 1 for each tool's current breaker state, else 0."""

    def __init__(self, states: Callable[[], Mapping[str, str]]) -> None:
        self._states = states

    def collect(self):
        family = GaugeMetricFamily(
            "appliance_workflow_breaker_state",
            "1 for a workflow tool's current breaker state, else 0 (tools appear at their first failure).",
            labels=["tool", "state"],
        )
        for tool, current in sorted(self._states().items()):
            for state in ("closed", "open", "half_open"):
                family.add_metric([tool, state], 1.0 if state == current else 0.0)
        yield family
