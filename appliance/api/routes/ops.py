"""Operations routes (admin): installation status for `appliance doctor`, and online backups."""

from __future__ import annotations

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State


class BackupIn(msgspec.Struct, forbid_unknown_fields=True):
    # Folder name under <data dir>/backups/; empty: backup-<time>.
    name: str | None = None


@get("/api/v1/admin/ops", tags=["admin"], sync_to_thread=True,
     summary="Installation status: version, the network guard's refused outbound attempts, index counts",
     description="Admin key. `network.outbound_attempts` counts outbound connections the process tried and the "
                 "guard refused since start (any is a finding); `indexes` compares each index with the catalogue.")
def ops_status(request: Request, state: State) -> dict:
    return state.appliance.ops_status(request.user)


@post("/api/v1/admin/backup", tags=["admin"], status_code=201, sync_to_thread=True,
      summary="Take a consistent snapshot (catalogue, indexes, admin key, config) while serving",
      description="Admin key. Written to <data dir>/backups/<name>; `appliance backup DEST` asks for it and moves "
                  "it to DEST. Ingestion continues meanwhile; restore with `appliance restore` (service stopped).")
def backup(request: Request, state: State, data: BackupIn) -> dict:
    return state.appliance.backup(request.user, data.name)


class VerifyChunksIn(msgspec.Struct, forbid_unknown_fields=True):
    collection: str | None = None  # every collection when absent
    repair: bool = False


@post("/api/v1/admin/verify-chunks", tags=["admin"], status_code=202, sync_to_thread=True,
      summary="Check stored chunks against each document's source; optionally re-ingest damaged documents",
      description="Admin key. Queues a `verify` job (follow it at `/api/v1/jobs/{id}`); its `summary` is the "
                  "report: `counts` per verdict (damaged, mismatched, at_risk, unverifiable, ok) and the "
                  "documents found, with the reason. With `repair`, damaged or mismatched documents whose source "
                  "bytes are at hand are re-ingested from them (`repair_jobs`).")
def verify_chunks(request: Request, state: State, data: VerifyChunksIn) -> dict:
    return state.appliance.verify_chunks(request.user, data.collection, data.repair)
