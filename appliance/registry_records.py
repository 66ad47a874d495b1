"""The model registry's records: families, immutable versions with their probe, aliases and every alias move."""

from __future__ import annotations

from typing import Any

from appliance.records import Record

KINDS = ("chat", "embedding", "reranker")
BACKENDS = ("llama.cpp", "vllm", "sentence-transformers", "remote")
STATES = ("registered", "probing", "ready", "rejected")


class ModelVersion(Record, kw_only=True):
    """One immutable version of a family: its weights (by path and sha256), what its header says,
    what the probe found, and the aliases that point at it now."""

    name: str  # the family
    version: int
    kind: str  # chat | embedding | reranker
    backend: str  # llama.cpp | vllm | sentence-transformers | remote
    path: str
    sha256: str
    size_bytes: int
    format: str  # gguf | safetensors | ...
    quantisation: str | None
    architecture: str | None
    context_length: int | None
    chat_template_sha256: str | None
    licence: str
    tags: list[str]
    state: str  # registered | probing | ready | rejected
    reason: str | None  # why it was rejected
    probe: dict[str, Any] | None
    source: str  # built-in, manifest, import, inbox
    created_at: str
    aliases: list[str]


class ModelFamily(Record, kw_only=True):
    name: str
    kind: str
    gate: str | None  # the eval gate a promotion to staging/production must pass; None: ungated
    aliases: dict[str, int]  # alias -> version
    versions: list[ModelVersion]
    created_at: str


class AliasMove(Record, kw_only=True):
    """One row of a family's alias history: who moved which alias from what to what, why, and on
    what evidence (the eval gate's report, or `gated: false`)."""

    id: int
    name: str  # the family
    alias: str
    action: str  # promote | rollback | import | config | remove
    version: int | None  # None: the alias was removed from this family
    previous_version: int | None
    actor: str
    reason: str
    gated: bool
    gate: str | None
    eval_report_id: str | None  # the gate's eval run
    eval_report: dict[str, Any] | None
    at: str


class ResolvedModel(Record, kw_only=True):
    """What serving needs of a reference (`name`, `name@version`, `name@alias`, or an alias): the
    version it names, checked against its sha256, and the local path of its weights."""

    reference: str
    name: str
    version: int
    alias: str | None
    kind: str
    backend: str
    path: str
    sha256: str
    context_length: int | None
    tags: list[str]
