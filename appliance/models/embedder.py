"""Sentence embedding models: the Embedder protocol and its sentence-transformers implementation."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from appliance.errors import InvalidInput, NotReady

# Invariant 4 (no outbound network): huggingface_hub reads these when it is first imported, which happens
# lazily below, so setting them here is early enough. Forced rather than defaulted on purpose.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# models.md: a one-token-batch query on two threads next to a busy core took ~40x longer than on one thread.
QUERY_THREADS = 1

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "vocab.json")
# These models offset positions by the padding index, so two position slots are unusable.
_POSITION_OFFSET_MODELS = {"roberta", "xlm-roberta", "camembert", "mpnet", "longformer"}
_VALID_DEVICES = ("auto", "cpu", "cuda", "mps")

# torch.set_num_threads is process-wide: every model call in the process (embedders, cross-encoders) takes
# this lock so that one call's thread count cannot leak into another running concurrently. On CPU running
# two inferences at once only oversubscribes the cores anyway.
_MODEL_CALL_LOCK = threading.RLock()


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which containers and systemd narrow)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@contextmanager
def model_call(threads: int) -> Iterator[None]:
    """Serialise one model call in this process and run it with `threads` torch CPU threads."""
    with _MODEL_CALL_LOCK:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        yield


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; other values pass through (imports torch)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> str:
    """Validate a device string without importing torch."""
    base = device.split(":", 1)[0]
    if base not in _VALID_DEVICES or (":" in device and not (base == "cuda" and device[5:].isdigit())):
        raise InvalidInput(f"unknown device {device!r}; expected auto, cpu, cuda, cuda:N or mps")
    return device


def _read_json(path: Path) -> dict[str, Any] | list[Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"model file {path} is not valid JSON: {exc}") from exc


def check_model_dir(model_dir: Path, what: str = "model") -> Path:
    """Fail fast with a clear message, before torch is imported, when a directory cannot hold a model."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InvalidInput(f"{what} directory {model_dir} does not exist or is not a directory")
    base = model_dir / _transformer_path(model_dir)
    if not (base / "config.json").is_file():
        raise InvalidInput(
            f"{what} directory {model_dir} has no config.json: not a Hugging Face model folder"
        )
    if not any((base / name).is_file() for name in _WEIGHT_FILES):
        raise InvalidInput(
            f"{what} directory {model_dir} has no weights (expected one of {', '.join(_WEIGHT_FILES)})"
        )
    if not any((base / name).is_file() for name in _TOKENIZER_FILES):
        raise InvalidInput(f"{what} directory {model_dir} has no tokenizer files")
    return model_dir


def _modules(model_dir: Path) -> list[dict[str, Any]]:
    modules = _read_json(model_dir / "modules.json")
    if not isinstance(modules, list):
        return []
    return sorted((m for m in modules if isinstance(m, dict)), key=lambda m: m.get("idx", 0))


def _module_kind(module: dict[str, Any]) -> str:
    # Old saves say sentence_transformers.models.Pooling, v6 sentence_transformers.base.modules.pooling.Pooling.
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def _transformer_path(model_dir: Path) -> str:
    for module in _modules(model_dir):
        if _module_kind(module) == "Transformer":
            return str(module.get("path", ""))
    return ""


def _hidden_size(config: dict[str, Any]) -> int | None:
    for key in ("hidden_size", "d_model", "dim", "n_embd"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


def _pooling_dimension(config: dict[str, Any], incoming: int | None) -> int | None:
    width = config.get("embedding_dimension", config.get("word_embedding_dimension", incoming))
    if not isinstance(width, int):
        return incoming
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        n_modes = 1
    elif isinstance(mode, list):
        n_modes = len(mode)
    else:
        n_modes = sum(1 for key, value in config.items() if key.startswith("pooling_mode_") and value is True)
    return width * max(n_modes, 1)


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What a caller must know about a model before loading it: output width and input token limit."""

    dimensions: int
    max_tokens: int


def read_model_shape(model_dir: Path) -> ModelShape:
    """Read the embedding width and the token limit from a model folder's JSON files (no torch)."""
    model_dir = Path(model_dir)
    transformer_dir = model_dir / _transformer_path(model_dir)
    config = _read_json(transformer_dir / "config.json")
    if not isinstance(config, dict):
        raise InvalidInput(f"{transformer_dir / 'config.json'} is missing or not a JSON object")
    dimensions = _hidden_size(config)
    # Pooling may concatenate several modes and Dense layers project: follow the pipeline in order.
    for module in _modules(model_dir):
        kind = _module_kind(module)
        module_config = _read_json(model_dir / str(module.get("path", "")) / "config.json")
        if not isinstance(module_config, dict) or kind == "Transformer":
            continue
        if kind == "Pooling":
            dimensions = _pooling_dimension(module_config, dimensions)
        elif kind == "Dense" and isinstance(module_config.get("out_features"), int):
            dimensions = module_config["out_features"]
    if not dimensions:
        raise InvalidInput(f"cannot tell the embedding width of {model_dir} from its config files")

    st_config = _read_json(transformer_dir / "sentence_bert_config.json")
    max_tokens = st_config.get("max_seq_length") if isinstance(st_config, dict) else None
    if not isinstance(max_tokens, int):
        limits = []
        positions = config.get("max_position_embeddings")
        if isinstance(positions, int):
            offset = 2 if config.get("model_type") in _POSITION_OFFSET_MODELS else 0
            limits.append(positions - offset)
        tokenizer_config = _read_json(transformer_dir / "tokenizer_config.json")
        if isinstance(tokenizer_config, dict) and isinstance(tokenizer_config.get("model_max_length"), int):
            # Tokenizers without a limit store a huge sentinel (1e30): ignore it.
            if tokenizer_config["model_max_length"] < 1_000_000:
                limits.append(tokenizer_config["model_max_length"])
        max_tokens = min(limits) if limits else 512
    return ModelShape(dimensions=dimensions, max_tokens=max_tokens)


class TokenCounter:
    """Counts tokens with a model's own tokenizer.json (the fast Rust tokenizer; no torch, no transformers)."""

    def __init__(self, model_dir: Path) -> None:
        self._path = Path(model_dir) / _transformer_path(Path(model_dir)) / "tokenizer.json"
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    if not self._path.is_file():
                        raise NotReady(f"{self._path} is missing: cannot count tokens for this model")
                    from tokenizers import Tokenizer

                    tokenizer = Tokenizer.from_file(str(self._path))
                    # Saved tokenizer.json files often carry the training-time truncation (128 for MiniLM).
                    tokenizer.no_truncation()
                    tokenizer.no_padding()
                    self._tokenizer = tokenizer
        return self._tokenizer

    def count(self, text: str) -> int:
        return len(self._get().encode(text, add_special_tokens=False).ids)


@runtime_checkable
class Embedder(Protocol):
    """Turns text into L2-normalised float32 vectors; one instance per model, safe to share across threads."""

    name: str
    dimensions: int
    max_tokens: int

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InvalidInput("embed_documents takes a sequence of strings, not one string")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InvalidInput(f"text {i} is a {type(text).__name__}, not a string")
    return out


class SentenceTransformerEmbedder:
    """An Embedder over a local sentence-transformers folder, loaded on first use (or by `warm()`).

    Inputs longer than `max_tokens` (special tokens included) are silently truncated by the model, so only
    their head is embedded: chunkers should keep chunks within `max_tokens - 2` as `count_tokens` measures.
    Query encoding runs on one torch thread, document batches on `threads` (default: all usable CPUs).
    """

    def __init__(
        self,
        model_dir: Path,
        device: str = "auto",
        batch_size: int = 32,
        threads: int | None = None,
        name: str | None = None,
    ) -> None:
        self.model_dir = check_model_dir(Path(model_dir), "embedding model")
        self.device = check_device(device)
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, got {batch_size}")
        if threads is not None and threads < 1:
            raise InvalidInput(f"threads must be at least 1, got {threads}")
        self.batch_size = batch_size
        self.threads = threads or available_cpus()
        # The packaged MiniLM lives in a folder called just "model": name it after its package instead.
        default_name = self.model_dir.name if self.model_dir.name != "model" else self.model_dir.parent.name
        self.name = name or default_name
        shape = read_model_shape(self.model_dir)
        self.dimensions = shape.dimensions
        self.max_tokens = shape.max_tokens
        self._tokens = TokenCounter(self.model_dir)
        self._model: Any = None
        self._load_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder(name={self.name!r}, dimensions={self.dimensions}, device={self.device!r})"

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        with self._load_lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                device = resolve_device(self.device)
                try:
                    model = SentenceTransformer(str(self.model_dir), device=device, local_files_only=True)
                except Exception as exc:  # a broken folder must surface as our error, with the path
                    raise NotReady(f"cannot load embedding model {self.model_dir}: {exc}") from exc
                actual = model.get_embedding_dimension()
                if actual != self.dimensions:
                    # Vector indexes are sized from `dimensions` before loading: a mismatch would corrupt them.
                    raise NotReady(
                        f"embedding model {self.model_dir} produces {actual}-d vectors but its config files "
                        f"say {self.dimensions}"
                    )
                self._model = model
        return self._model

    def warm(self) -> None:
        """Load the model and tokenizer now and run one tiny query so the first real request is not slow."""
        self._tokens.count("warm up")
        self.embed_query("warm up")

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        items = _check_texts(texts)
        if not items:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        model = self._load()
        with model_call(self.threads):
            vectors = model.encode_document(
                items,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(items), self.dimensions)

    def embed_query(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise InvalidInput(f"query is a {type(text).__name__}, not a string")
        model = self._load()
        with model_call(QUERY_THREADS):
            vectors = model.encode_query(
                [text],
                batch_size=1,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors[0], dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` without the model's special tokens ([CLS]/[SEP]), untruncated."""
        return self._tokens.count(text)
