"""The library of documents: applying new versions (checked together with what is stored) and pinning
a run to the exact versions it starts with."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from appliance.errors import InvalidInput, NotFound
from appliance.workflows.check import Catalogue, check
from appliance.workflows.documents import Doc, DocumentError, parse, path_text
from appliance.workflows.gate import DIMENSIONS
from appliance.workflows.store import WorkflowStore

KINDS = ("Tool", "Agent", "Policy", "Workflow")


def check_all(docs: list[Doc], stored: dict[str, dict[str, dict]] | None = None) -> None:
    """Check each document's meaning against the others given and those stored (the given win)."""
    catalogue: dict[str, dict[str, dict]] = {k: dict((stored or {}).get(k, {})) for k in KINDS}
    seen: dict[tuple[str, str], str] = {}
    for doc in docs:
        if (doc.kind, doc.name) in seen:
            raise DocumentError(
                "name",
                f"{doc.kind} {doc.name!r} is given twice (also in {seen[doc.kind, doc.name]})",
                doc.source,
            )
        seen[doc.kind, doc.name] = doc.source
        catalogue[doc.kind][doc.name] = doc.body
    cat = Catalogue(catalogue)
    for doc in sorted(docs, key=lambda d: KINDS.index(d.kind)):
        check(doc, cat)


def validate_files(texts: Iterable[tuple[str, str | bytes]]) -> list[Doc]:
    """Parse and check files together (the `wf validate` command); raises at the first fault."""
    docs = [doc for source, text in texts for doc in parse(text, source)]
    check_all(docs)
    return docs


class Library:
    def __init__(self, store: WorkflowStore) -> None:
        self.store = store

    def stored(self) -> dict[str, dict[str, dict]]:
        return {kind: self.store.latest_bodies(kind) for kind in KINDS}

    def apply(
        self, docs: list[Doc], created_by: str, vet: Callable[[list[Doc]], None] | None = None
    ) -> list[dict]:
        """Store new versions once every document passes its checks (and `vet`, the appliance's
        checks against its settings, given documents that are already valid)."""
        check_all(docs, self.stored())
        if vet is not None:
            vet(docs)
        out = []
        for doc in docs:
            new = self.store.put_document(doc.kind, doc.name, doc.version, doc.body, created_by)
            out.append({"kind": doc.kind, "name": doc.name, "version": doc.version, "created": new})
        return out

    def pin(self, workflow: str, key_id: str, role: str) -> dict:
        """Everything a run of `workflow` needs, at the versions stored now: editing a document
        later never changes a run in flight."""
        stored = self.stored()
        body = stored["Workflow"].get(workflow)
        if body is None:
            raise NotFound(f"workflow {workflow!r} does not exist")
        cat = Catalogue(stored)
        versions = {kind: {d.name: d.version for d in self.store.documents(kind)} for kind in KINDS}
        pins = {f"Workflow/{workflow}": versions["Workflow"][workflow]}
        agents: dict[str, dict] = {}
        tools: dict[str, dict] = {}

        def need_tool(name: str) -> None:
            if name in tools:
                return
            spec = cat.tool(name)
            if spec is None:
                raise InvalidInput(f"workflow {workflow!r} needs tool {name!r}, which no longer exists")
            tools[name] = spec
            pins[f"Tool/{name}"] = versions["Tool"].get(name, "builtin")
            if spec.get("fallback"):
                need_tool(spec["fallback"])

        for call in _calls(body["steps"]):
            if "tool" in call:
                need_tool(call["tool"])
                continue
            for agent_name in call["dispatch"]["among"] if "dispatch" in call else [call["agent"]]:
                agent = cat.agent(agent_name)
                if agent is None:
                    raise InvalidInput(
                        f"workflow {workflow!r} needs agent {agent_name!r}, which no longer exists"
                    )
                agents[agent_name] = agent
                pins[f"Agent/{agent_name}"] = versions["Agent"][agent_name]
                for name in agent.get("tools", []):
                    need_tool(name)
        policy = _policy(stored["Policy"], key_id, role)
        for name in policy.pop("names"):
            pins[f"Policy/{name}"] = versions["Policy"][name]
        return {"workflow": body, "agents": agents, "tools": tools, "policy": policy, "pins": pins}


def _calls(steps: list[dict]):
    for step in steps:
        if "tool" in step or "agent" in step or "dispatch" in step:
            yield step
        for call in [step.get("do"), (step.get("loop") or {}).get("do"), *step.get("parallel", [])]:
            if call:
                yield call


def _policy(policies: dict[str, dict], key_id: str, role: str) -> dict:
    """The policies that apply to a key (by id or role), combined: scopes intersect, budgets take the minimum."""
    tools: set[str] | None = None
    collections: set[str] | None = None
    caps: dict = {}
    names = []
    for name, body in sorted(policies.items()):
        applies = body.get("applies_to") or {}
        if applies and key_id not in applies.get("keys", []) and role not in applies.get("roles", []):
            continue
        names.append(name)
        if "tools" in body:
            tools = set(body["tools"]) if tools is None else tools & set(body["tools"])
        if "collections" in body:
            wanted = set(body["collections"])
            collections = wanted if collections is None else collections & wanted
        for dim in DIMENSIONS:
            cap = (body.get("max_budget") or {}).get(dim)
            if cap is not None:
                caps[dim] = cap if dim not in caps else min(caps[dim], cap)
    return {
        "tools": sorted(tools) if tools is not None else None,
        "collections": sorted(collections) if collections is not None else None,
        "max_budget": caps,
        "names": names,
    }


__all__ = ["Library", "check_all", "validate_files", "path_text"]
