"""Second-stage reranking: score (query, passage) pairs with a cross-encoder or a stronger bi-encoder."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from appliance.errors import InvalidInput, NotReady
from appliance.models.embedder import (
    Embedder,
    SentenceTransformerEmbedder,
    available_cpus,
    check_device,
    check_model_dir,
    model_call,
    read_model_shape,
    resolve_device,
)

RERANKER_KINDS = ("none", "cross-encoder", "bi-encoder")


@dataclass(frozen=True, slots=True)
class RerankCandidate:
    """One first-stage hit to re-score: its chunk id, text, and the document title if any."""

    chunk_id: int
    text: str
    title: str = ""


def passage_text(candidate: RerankCandidate) -> str:
    # The title often carries the topic the chunk itself never names (a section deep inside a manual).
    return f"{candidate.title}\n{candidate.text}" if candidate.title else candidate.text


@runtime_checkable
class Reranker(Protocol):
    """Scores candidates for a query: one float per candidate, in input order, higher is more relevant."""

    name: str

    def rerank(self, query: str, candidates: Sequence[RerankCandidate]) -> list[float]: ...


class NoReranker:
    """Keeps the first stage's order: the scores simply descend with the input position."""

    name = "none"

    def rerank(self, query: str, candidates: Sequence[RerankCandidate]) -> list[float]:
        n = len(candidates)
        return [float(n - i) for i in range(n)]


def _cross_encoder_labels(model_dir: Path) -> int:
    """Check, without torch, that the folder holds a trained sequence-classification head; return its width."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        st_config_path = model_dir / "config_sentence_transformers.json"
        st_config = json.loads(st_config_path.read_text(encoding="utf-8")) if st_config_path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cross-encoder {model_dir} has an unreadable config: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(st_config, dict):
        raise InvalidInput(f"cross-encoder {model_dir} has a config that is not a JSON object")
    architectures = config.get("architectures") or []
    st_type = str(st_config.get("model_type", ""))
    if (
        not any(str(a).endswith("ForSequenceClassification") for a in architectures)
        and st_type != "CrossEncoder"
    ):
        # Loading a bi-encoder here "works" with a random head and ranks at random: refuse it.
        raise InvalidInput(
            f"{model_dir} is not a cross-encoder (architectures {architectures}); "
            "use kind 'bi-encoder' for sentence-transformers embedding models"
        )
    # transformers omits id2label when it holds its default of two labels.
    labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 2))
    if labels not in (1, 2):
        raise InvalidInput(
            f"cross-encoder {model_dir} has {labels} output labels; expected 1 (score) or 2 (no/yes)"
        )
    return labels


class CrossEncoderReranker:
    """A local sentence-transformers CrossEncoder folder, loaded on first use.

    Scores are the raw logits (for two-label models, yes minus no): monotonic with the model's probability
    but free of sigmoid saturation, so confident candidates do not tie. Pairs longer than `max_length`
    tokens are truncated; `max_length` is clamped to what the model's position table allows.
    """

    def __init__(
        self,
        model_dir: Path,
        device: str = "auto",
        batch_size: int = 32,
        max_length: int = 512,
        threads: int | None = None,
        name: str | None = None,
    ) -> None:
        self.model_dir = check_model_dir(Path(model_dir), "cross-encoder")
        self.device = check_device(device)
        if batch_size < 1 or max_length < 8:
            raise InvalidInput(
                f"batch_size must be >= 1 and max_length >= 8 (got {batch_size}, {max_length})"
            )
        if threads is not None and threads < 1:
            raise InvalidInput(f"threads must be at least 1, got {threads}")
        _cross_encoder_labels(self.model_dir)
        self.batch_size = batch_size
        self.max_length = min(max_length, read_model_shape(self.model_dir).max_tokens)
        # Reranking scores a whole batch of pairs per query, closer to corpus work than to a query embed.
        self.threads = threads or available_cpus()
        self.name = name or f"cross-encoder:{self.model_dir.name}"
        self._model: Any = None
        self._load_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> Any:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    from sentence_transformers import CrossEncoder

                    try:
                        self._model = CrossEncoder(
                            str(self.model_dir),
                            device=resolve_device(self.device),
                            max_length=self.max_length,
                            local_files_only=True,
                        )
                    except Exception as exc:  # surface a broken folder as our error, with the path
                        raise NotReady(f"cannot load cross-encoder {self.model_dir}: {exc}") from exc
        return self._model

    def warm(self) -> None:
        self.rerank("warm up", [RerankCandidate(0, "warm up")])

    def rerank(self, query: str, candidates: Sequence[RerankCandidate]) -> list[float]:
        if not candidates:
            return []
        pairs = [(query, passage_text(c)) for c in candidates]
        model = self._load()
        import torch

        with model_call(self.threads):
            logits = model.predict(
                pairs,
                batch_size=self.batch_size,
                activation_fn=torch.nn.Identity(),
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        logits = np.asarray(logits, dtype=np.float64).reshape(len(candidates), -1)
        if logits.shape[1] == 2:
            return [float(x) for x in logits[:, 1] - logits[:, 0]]
        return [float(x) for x in logits[:, 0]]


class BiEncoderReranker:
    """Re-scores candidates by cosine similarity under a (stronger) embedding model than the first stage."""

    def __init__(self, embedder: Embedder, name: str | None = None) -> None:
        self.embedder = embedder
        self.name = name or f"bi-encoder:{embedder.name}"

    def warm(self) -> None:
        warm = getattr(self.embedder, "warm", None)
        if callable(warm):
            warm()

    def rerank(self, query: str, candidates: Sequence[RerankCandidate]) -> list[float]:
        if not candidates:
            return []
        query_vector = self.embedder.embed_query(query)
        passages = self.embedder.embed_documents([passage_text(c) for c in candidates])
        # Both sides are L2-normalised, so the dot product is the cosine.
        return [float(x) for x in passages @ query_vector]


def load_reranker(kind: str, model_dir: Path | None = None, device: str = "auto") -> Reranker:
    """Build the configured reranker; checks the folder (no torch import) and loads lazily on first use."""
    if kind == "none":
        return NoReranker()
    if kind not in RERANKER_KINDS:
        raise InvalidInput(f"unknown reranker kind {kind!r}; expected one of {', '.join(RERANKER_KINDS)}")
    if model_dir is None:
        raise InvalidInput(f"reranker kind {kind!r} needs a model directory")
    if kind == "cross-encoder":
        return CrossEncoderReranker(Path(model_dir), device=device)
    return BiEncoderReranker(SentenceTransformerEmbedder(Path(model_dir), device=device))
