"""The model registry: families, versions, aliases and their history (any key reads; admin changes)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from appliance.api.dependencies import admin_only
from appliance.core.access import Scope
from appliance.core.registry import Registry
from appliance.core.rollout import Rollouts
from appliance.errors import InvalidInput
from appliance.registry_records import (
    AliasMove,
    Canary,
    ModelFamily,
    ModelVersion,
    RemoteEndpoint,
    ShadowReport,
    ShadowState,
)


class RemoteIn(msgspec.Struct, forbid_unknown_fields=True):
    """A model served by an OpenAI-compatible server whose host is in settings network.allow."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]  # its API base, e.g. https://h:8000/v1
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]  # the model's id there
    api_key_file: Annotated[str, msgspec.Meta(max_length=4096)] | None = None  # a file on this server
    api_key_env: Annotated[str, msgspec.Meta(max_length=256)] | None = None  # or an environment variable
    capacity: Annotated[int, msgspec.Meta(ge=1, le=256)] = 4  # requests sent to it at once


class ImportIn(msgspec.Struct, forbid_unknown_fields=True):
    # A GGUF file on the server, or `remote`: exactly one of the two.
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    name: str | None = None  # the family; default: from the file's header (remote: the model's id)
    remote: RemoteIn | None = None
    context_length: Annotated[int, msgspec.Meta(ge=16)] | None = None  # remote: default what it reports


class AliasIn(msgspec.Struct, forbid_unknown_fields=True):
    version: Annotated[int, msgspec.Meta(ge=1)]
    reason: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    run: str | None = None  # a finished eval run of the candidate for the family's gate


class RollbackIn(msgspec.Struct, forbid_unknown_fields=True):
    alias: str = "production"
    reason: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class CanaryIn(msgspec.Struct, forbid_unknown_fields=True):
    version: Annotated[int, msgspec.Meta(ge=1)]
    # Percent of production traffic at each step, increasing, ending at 100 (e.g. [5, 25, 50, 100]).
    steps: Annotated[list[int], msgspec.Meta(min_length=1, max_length=20)]
    min_samples: Annotated[int, msgspec.Meta(ge=1, le=100000)] | None = (
        None  # default: registry.canary_min_samples
    )
    reason: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    run: str | None = None  # a finished eval run of the candidate for the family's gate


class ShadowIn(msgspec.Struct, forbid_unknown_fields=True):
    version: Annotated[int, msgspec.Meta(ge=1)] | None  # null: stop the shadow
    share: Annotated[float, msgspec.Meta(gt=0, le=1)] = 1.0  # of the production chat requests mirrored
    reason: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class GateIn(msgspec.Struct, forbid_unknown_fields=True):
    gate: str | None  # an eval gate's name; null: promotions of this family are ungated


@get("/", sync_to_thread=True, summary="Model families with their versions (state, tags) and aliases")
def list_models(
    caller: NamedDependency[Scope], registry: NamedDependency[Registry], rollouts: NamedDependency[Rollouts]
) -> list[ModelFamily]:
    return [rollouts.decorate(f) for f in registry.list(caller)]


@get(
    "/{name:str}",
    sync_to_thread=True,
    summary="One model family: versions, probe results, aliases, its canary and shadow",
)
def get_model(
    caller: NamedDependency[Scope],
    registry: NamedDependency[Registry],
    rollouts: NamedDependency[Rollouts],
    name: FromPath[str],
) -> ModelFamily:
    return rollouts.decorate(registry.get(caller, name))


@get(
    "/{name:str}/history",
    sync_to_thread=True,
    summary="Every alias move of a family, oldest first: who, when, why, gate report, previous version",
)
def history(
    caller: NamedDependency[Scope], registry: NamedDependency[Registry], name: FromPath[str]
) -> list[AliasMove]:
    return registry.history(caller, name)


@post(
    "/import",
    status_code=201,
    sync_to_thread=True,
    guards=[admin_only],
    summary="Register a GGUF file on the server (verify header and sha256, probe in a child process), "
    "or a model an OpenAI-compatible server serves (`remote`: probed over the wire)",
    description="A version that fails a check is registered `rejected` with its reason and is never "
    "served. A remote URL whose host is not in settings network.allow is refused (400) before "
    "anything connects.",
)
def import_model(
    caller: NamedDependency[Scope], registry: NamedDependency[Registry], data: JSONBody[ImportIn]
) -> ModelVersion:
    if (data.path is None) == (data.remote is None):
        raise InvalidInput("give either path (a GGUF file on the server) or remote, not both or neither")
    if data.remote is not None:
        r = data.remote
        endpoint = RemoteEndpoint(
            url=r.url,
            model=r.model,
            api_key_file=r.api_key_file,
            api_key_env=r.api_key_env,
            capacity=r.capacity,
        )
        return registry.import_remote(caller, endpoint, data.name, data.context_length)
    if data.context_length is not None:
        raise InvalidInput("context_length is for a remote model (a file's is read from its header)")
    return registry.import_model(caller, data.path or "", data.name)


@post(
    "/{name:str}/aliases/{alias:str}",
    status_code=200,
    sync_to_thread=True,
    guards=[admin_only],
    errors=(409,),
    summary="Point an alias at a version; to staging/production through the family's eval gate",
)
def set_alias(
    caller: NamedDependency[Scope],
    registry: NamedDependency[Registry],
    name: FromPath[str],
    alias: FromPath[str],
    data: JSONBody[AliasIn],
) -> AliasMove:
    return registry.promote(caller, name, data.version, alias, data.reason, data.run)


@post(
    "/{name:str}/rollback",
    status_code=200,
    sync_to_thread=True,
    guards=[admin_only],
    errors=(409,),
    summary="Move an alias (default production) back to the version it held before",
)
def rollback(
    caller: NamedDependency[Scope],
    rollouts: NamedDependency[Rollouts],
    name: FromPath[str],
    data: JSONBody[RollbackIn],
) -> AliasMove:
    return rollouts.rollback(caller, name, data.alias, data.reason)


@post(
    "/{name:str}/canary",
    status_code=201,
    sync_to_thread=True,
    guards=[admin_only],
    errors=(409,),
    summary="Start a canary: a weight schedule of production traffic to a version, sticky per API key",
    description="Each step is analysed against stable (error rate, p95 first-token and total latency) once "
    "it has its minimum sample; a failing step rolls the canary back, the last passing step promotes it to "
    "production. Stop it with POST /rollback {alias: canary}.",
)
def start_canary(
    caller: NamedDependency[Scope],
    rollouts: NamedDependency[Rollouts],
    name: FromPath[str],
    data: JSONBody[CanaryIn],
) -> Canary:
    return rollouts.start_canary(
        caller, name, data.version, data.steps, data.min_samples, data.reason, data.run
    )


@get(
    "/{name:str}/shadow",
    sync_to_thread=True,
    summary="The shadow's agreement with production: answer similarity, citation overlap, latency, pairs",
)
def shadow_report(
    caller: NamedDependency[Scope],
    rollouts: NamedDependency[Rollouts],
    name: FromPath[str],
    recent: FromQuery[int] = 10,
) -> ShadowReport:
    return rollouts.shadows.report(caller, name, max(0, min(recent, 100)))


@post(
    "/{name:str}/shadow",
    status_code=200,
    sync_to_thread=True,
    guards=[admin_only],
    errors=(409,),
    summary="Mirror a share of the family's production chat requests to a version (version null: stop)",
)
def set_shadow(
    caller: NamedDependency[Scope],
    rollouts: NamedDependency[Rollouts],
    name: FromPath[str],
    data: JSONBody[ShadowIn],
) -> ShadowState | None:
    return rollouts.shadows.set_shadow(caller, name, data.version, data.share, data.reason)


@post(
    "/{name:str}/gate",
    status_code=200,
    sync_to_thread=True,
    guards=[admin_only],
    summary="Set the eval gate promotions of this family to staging or production must pass (null: none)",
)
def set_gate(
    caller: NamedDependency[Scope],
    registry: NamedDependency[Registry],
    name: FromPath[str],
    data: JSONBody[GateIn],
) -> ModelFamily:
    return registry.set_gate(caller, name, data.gate)


router = Router(
    "/api/v1/models",
    route_handlers=[
        list_models,
        get_model,
        history,
        import_model,
        set_alias,
        rollback,
        start_canary,
        shadow_report,
        set_shadow,
        set_gate,
    ],
    tags=["models"],
)
