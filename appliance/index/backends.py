"""The vector index backends, registered through one door and chosen by settings index.vector_backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.config import Settings
from appliance.errors import InvalidInput
from appliance.index.protocols import VectorIndex
from appliance.offline import check_service_url


@dataclass(frozen=True, slots=True)
class VectorBackend:
    name: str
    # (settings, the data dir's index folder, the embedder's dimensions) -> an open index
    open: Callable[[Settings, Path, int], VectorIndex]
    # Seconds between commits (IndexSync's save interval): a backend rewritten whole on commit
    # saves on an interval, one whose writes become searchable only at commit commits every apply.
    save_interval: Callable[[Settings], float]
    description: str


VECTOR_BACKENDS: dict[str, VectorBackend] = {}


def register_vector_backend(backend: VectorBackend) -> None:
    if backend.name in VECTOR_BACKENDS:
        raise ValueError(f"vector backend {backend.name!r} is registered twice")
    VECTOR_BACKENDS[backend.name] = backend


def open_vector_index(settings: Settings, index_dir: Path, dimensions: int) -> tuple[VectorIndex, float]:
    """The configured backend's index, opened, and its save interval."""
    backend = VECTOR_BACKENDS.get(settings.index.vector_backend)
    if backend is None:
        raise InvalidInput(
            f"index.vector_backend {settings.index.vector_backend!r} is not one of {sorted(VECTOR_BACKENDS)}"
        )
    return backend.open(settings, index_dir, dimensions), backend.save_interval(settings)


def check_qdrant_url(settings: Settings) -> str:
    """The cluster URL, once it is http(s) to a host the network guard lets the process reach
    (loopback or an entry of network.allow); InvalidInput otherwise, before anything connects."""
    url = settings.index.qdrant.url
    q = settings.index.qdrant
    check_service_url(url, settings.network, "index.qdrant.url", "index.qdrant.api_key", bool(q.api_key))
    return url


def _open_usearch(settings: Settings, index_dir: Path, dimensions: int) -> VectorIndex:
    from appliance.index.vectors import USearchVectorIndex

    return USearchVectorIndex(
        index_dir / "vectors",
        dimensions,
        dtype=settings.index.vector_dtype,
        exact_search_max=settings.index.exact_search_max,
    )


def _open_memory(settings: Settings, index_dir: Path, dimensions: int) -> VectorIndex:
    from appliance.index.memory import MemoryVectorIndex

    return MemoryVectorIndex(dimensions, index_dir / "memory-vectors")


def _open_qdrant(settings: Settings, index_dir: Path, dimensions: int) -> VectorIndex:
    from appliance.index.qdrant import QdrantVectorIndex  # imports qdrant-client: only when chosen

    q = settings.index.qdrant
    if q.url:
        return QdrantVectorIndex(
            dimensions,
            url=check_qdrant_url(settings),
            api_key=q.api_key,
            collection=q.collection,
            timeout_seconds=q.timeout_seconds,
            count_settle_seconds=q.count_settle_seconds,
        )
    return QdrantVectorIndex(dimensions, path=index_dir / "qdrant", collection=q.collection)


register_vector_backend(
    VectorBackend(
        "usearch",
        _open_usearch,
        lambda s: s.index.vector_save_interval_seconds,
        "USearch HNSW graphs in the data dir, saved whole on an interval (the default)",
    )
)
register_vector_backend(
    VectorBackend(
        "memory",
        _open_memory,
        lambda s: s.index.vector_save_interval_seconds,
        "exact cosine over NumPy in memory, saved whole to one file (small collections)",
    )
)
register_vector_backend(
    VectorBackend(
        "qdrant",
        _open_qdrant,
        lambda s: 0.0,
        "Qdrant: a cluster by index.qdrant.url, or its embedded local mode in the data dir",
    )
)
