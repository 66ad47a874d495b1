"""Collections: create and list; each collection's embedder (a blue-green `reembed` job, confirm, rollback)."""

from __future__ import annotations

import msgspec
from litestar import Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from appliance.api.dependencies import admin_only
from appliance.api.schemas import CollectionIn
from appliance.core.access import Scope
from appliance.core.embedders import Embedders
from appliance.core.knowledge import Knowledge
from appliance.records import Collection, Job
from appliance.registry_records import CollectionEmbedder


class EmbedderIn(msgspec.Struct, forbid_unknown_fields=True):
    model: str  # a registry reference to an embedding model: name, name@version, name@alias or an alias
    min_gain: float = 0.0  # the new generation's nDCG@10 must reach the live one's plus this
    ungated: bool = False  # switch without comparing retrieval (the record says so)


@post("/", status_code=201, sync_to_thread=True, errors=(403, 409))
def create_collection(
    caller: NamedDependency[Scope], knowledge: NamedDependency[Knowledge], data: JSONBody[CollectionIn]
) -> Collection:
    return knowledge.create_collection(caller, data.name, data.description)


@get("/", sync_to_thread=True)
def list_collections(
    caller: NamedDependency[Scope], knowledge: NamedDependency[Knowledge]
) -> list[Collection]:
    return knowledge.list_collections(caller)


@get(
    "/{name:str}/embedder",
    sync_to_thread=True,
    guards=[admin_only],
    summary="A collection's embedder: the live generation, the one kept until confirmed, the gate",
)
def get_embedder(
    caller: NamedDependency[Scope], embedders: NamedDependency[Embedders], name: FromPath[str]
) -> CollectionEmbedder:
    return embedders.get(caller, name)


@post(
    "/{name:str}/embedder",
    status_code=202,
    sync_to_thread=True,
    guards=[admin_only],
    errors=(409, 503),
    summary="Change a collection's embedder (a `reembed` job): re-embedded beside the live vectors, gated, switched",
    description="Embeds every chunk of the collection with the model into a new vector generation while "
    "search goes on from the live one, then compares semantic retrieval of both on the collection's eval "
    "sets (and the tuning held-out queries of a tuned model): the switch happens, atomically, only when "
    "the new nDCG@10 is at least the live one's plus `min_gain`. The old generation is kept until "
    "`/embedder/confirm`; `/embedder/rollback` returns to it.",
)
def switch_embedder(
    caller: NamedDependency[Scope],
    embedders: NamedDependency[Embedders],
    name: FromPath[str],
    data: JSONBody[EmbedderIn],
) -> Job:
    return embedders.switch(caller, name, data.model, data.min_gain, data.ungated)


@post(
    "/{name:str}/embedder/confirm",
    status_code=200,
    sync_to_thread=True,
    guards=[admin_only],
    errors=(409,),
    summary="Keep a collection's new embedder: the previous generation is dropped",
)
def confirm_embedder(
    caller: NamedDependency[Scope], embedders: NamedDependency[Embedders], name: FromPath[str]
) -> CollectionEmbedder:
    return embedders.confirm(caller, name)


@post(
    "/{name:str}/embedder/rollback",
    status_code=200,
    sync_to_thread=True,
    guards=[admin_only],
    errors=(409, 503),
    summary="Switch a collection back to the embedder it had before its last switch",
)
def rollback_embedder(
    caller: NamedDependency[Scope], embedders: NamedDependency[Embedders], name: FromPath[str]
) -> CollectionEmbedder:
    return embedders.rollback(caller, name)


router = Router(
    "/api/v1/collections",
    route_handlers=[
        create_collection,
        list_collections,
        get_embedder,
        switch_embedder,
        confirm_embedder,
        rollback_embedder,
    ],
    tags=["collections"],
)
