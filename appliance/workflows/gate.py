"""The one gate every LLM and tool call of a run passes: the calling agent's scopes and the run's and
agent's remaining budgets, checked before the call (nested calls included)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

DIMENSIONS = ("tokens", "tool_calls", "steps", "wall_seconds")


class Refused(Exception):
    """A call the scopes do not allow: it is not made."""


class BudgetExceeded(Exception):
    """A budget is spent: the call is not made, and `on_limit` says what the run does."""

    def __init__(self, dimension: str, limit: float, used: float, on_limit: str, owner: str) -> None:
        super().__init__(f"{owner} budget spent: {dimension} {used:g} of {limit:g}")
        self.dimension = dimension
        self.limit = limit
        self.used = used
        self.on_limit = on_limit
        self.owner = owner


@dataclass
class Budget:
    """Limits of a run or an agent; None: unlimited."""

    tokens: int | None = None
    tool_calls: int | None = None
    steps: int | None = None
    wall_seconds: float | None = None

    @classmethod
    def of(cls, limits: dict | None, caps: dict | None = None) -> Budget:
        limits, caps = limits or {}, caps or {}
        values = {}
        for dim in DIMENSIONS:
            own, cap = limits.get(dim), caps.get(dim)
            values[dim] = cap if own is None else (own if cap is None else min(own, cap))
        return cls(**values)

    def limit(self, dim: str) -> float | None:
        return getattr(self, dim)


class Gate:
    """Counts a run's usage (restored from the run's record on resume) and refuses, before the
    call, whatever its scopes or budgets do not allow. Thread-safe: fan-out branches share it."""

    def __init__(
        self,
        budget: Budget,
        on_limit: str,
        usage: dict,
        policy_tools: set[str] | None,
        agents: dict[str, dict],
        extra: dict | None = None,
    ) -> None:
        self.budget = budget
        self.on_limit = on_limit
        self.usage = {dim: float(usage.get(dim, 0)) for dim in DIMENSIONS}
        self.agent_usage: dict[str, dict[str, float]] = {
            name: dict(v) for name, v in (usage.get("agents") or {}).items()
        }
        self.extra = dict(extra or usage.get("extra") or {})  # granted by escalation: dim -> added
        self.policy_tools = policy_tools
        self.agents = agents
        self._lock = threading.Lock()
        self._since = time.monotonic()
        self._wall_base = self.usage["wall_seconds"]

    # -- scopes --------------------------------------------------------------------------------
    def allow_tool(self, agent: str | None, tool: str, narrowed: list[str] | None = None) -> None:
        if self.policy_tools is not None and tool not in self.policy_tools:
            raise Refused(f"tool {tool!r} is outside the policy of this run's key")
        if agent is not None:
            allowed = set(self.agents[agent].get("tools", []))
            if narrowed is not None:
                allowed &= set(narrowed)
            if tool not in allowed:
                raise Refused(f"tool {tool!r} is outside agent {agent!r}'s allowed tools")

    # -- budgets -------------------------------------------------------------------------------
    def _wall(self) -> float:
        return self._wall_base + (time.monotonic() - self._since)

    def _check(self, dim: str, adding: float, agent: str | None) -> None:
        used = self._wall() if dim == "wall_seconds" else self.usage[dim]
        limit = self.budget.limit(dim)
        if limit is not None:
            limit += self.extra.get(dim, 0)
            if used + adding > limit:
                raise BudgetExceeded(dim, limit, used, self.on_limit, "run")
        if agent is not None:
            spec = self.agents[agent]
            own = (spec.get("limits") or {}).get(dim)
            if own is not None and dim != "wall_seconds":
                spent = self.agent_usage.get(agent, {}).get(dim, 0)
                if spent + adding > own:
                    raise BudgetExceeded(dim, own, spent, spec.get("on_limit", "fail"), f"agent {agent!r}")

    def before_step(self, agent: str | None = None) -> None:
        with self._lock:
            self._check("steps", 1, agent)
            self._check("wall_seconds", 0, agent)
            self._add("steps", 1, agent)

    def before_tool(self, agent: str | None, tool: str, narrowed: list[str] | None = None) -> None:
        with self._lock:
            self.allow_tool(agent, tool, narrowed)
            self._check("tool_calls", 1, agent)
            self._check("wall_seconds", 0, agent)
            self._add("tool_calls", 1, agent)

    def before_llm(self, agent: str | None) -> int | None:
        """Check there are tokens left; returns how many (the call's max_tokens), None: unlimited."""
        with self._lock:
            self._check("tokens", 1, agent)
            self._check("wall_seconds", 0, agent)
            left = []
            if self.budget.tokens is not None:
                left.append(self.budget.tokens + self.extra.get("tokens", 0) - self.usage["tokens"])
            own = (self.agents[agent].get("limits") or {}).get("tokens") if agent else None
            if own is not None:
                left.append(own - self.agent_usage.get(agent, {}).get("tokens", 0))
            return int(min(left)) if left else None

    def charge_tokens(self, agent: str | None, tokens: int) -> None:
        with self._lock:
            self._add("tokens", tokens, agent)

    def _add(self, dim: str, n: float, agent: str | None) -> None:
        self.usage[dim] += n
        if agent is not None:
            mine = self.agent_usage.setdefault(agent, {})
            mine[dim] = mine.get(dim, 0) + n

    def grant(self, dim: str) -> None:
        """An escalation answered `continue`: the spent dimension gets its limit once more."""
        with self._lock:
            limit = self.budget.limit(dim) or 0
            self.extra[dim] = self.extra.get(dim, 0) + limit

    def snapshot(self) -> dict:
        with self._lock:
            out: dict = {dim: self.usage[dim] for dim in DIMENSIONS if dim != "wall_seconds"}
            out["wall_seconds"] = round(self._wall(), 3)
            if self.agent_usage:
                out["agents"] = self.agent_usage
            if self.extra:
                out["extra"] = self.extra
            return out
