"""Memory sizing of chat models: the machine's RAM, a GGUF model's estimated need, the process's resident size."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from appliance.errors import InvalidInput
from appliance.models.gguf_header import HeaderError, read_header

_MB = 1024 * 1024
# What llama.cpp needs besides weights and the KV cache (compute buffers, output logits, the
# Llama object), per slot: measured for SmolLM2 and Gemma 3 270M at 8k context as 30-60 MB.
_OVERHEAD_PER_SLOT_MB = 64.0
# The vocabulary as llama.cpp holds it (token texts, scores, lookup maps), once for the
# vocabulary-only instance and once per slot: about 160 bytes a token over both, measured as the
# difference between SmolLM2 (49k tokens) and Gemma 3 270M (262k tokens) at the same context.
_VOCAB_BYTES_PER_TOKEN = 160


def machine_ram_mb() -> float:
    """Physical memory, or the cgroup's limit when it is lower (a container, a systemd MemoryMax)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / _MB
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if raw.isdigit():
            total = min(total, int(raw) / _MB)
    return total


def default_budget_mb() -> float:
    """Half the machine's memory: the embedder, the reranker, DuckDB, the indexes and the parsers
    share the rest."""
    return round(machine_ram_mb() / 2)


def rss_mb() -> float:
    """The process's resident set now."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / _MB


@lru_cache(maxsize=64)
def _gguf_scalars(path: str, _mtime_ns: int, _size: int) -> dict[str, object]:
    try:
        header = read_header(Path(path))
    except HeaderError as exc:
        raise InvalidInput(f"{path}: {exc}") from None
    out = {k: v for k, v in header.metadata.items() if not isinstance(v, list)}
    if "tokenizer.ggml.tokens" in header.array_lengths:
        out["tokenizer.ggml.tokens.count"] = header.array_lengths["tokenizer.ggml.tokens"]
    return out


def gguf_scalars(path: Path) -> dict[str, object]:
    """The scalar and string metadata of a GGUF file's header, and the vocabulary's size as
    `tokenizer.ggml.tokens.count` (models/gguf_header.py reads it, skipping the arrays)."""
    stat = Path(path).stat()
    return _gguf_scalars(str(path), stat.st_mtime_ns, stat.st_size)


def kv_bytes_per_token(meta: dict[str, object]) -> int | None:
    """f16 K and V of every layer for one token of context, from the architecture's metadata."""
    arch = meta.get("general.architecture")
    layers = meta.get(f"{arch}.block_count")
    heads = meta.get(f"{arch}.attention.head_count")
    kv_heads = meta.get(f"{arch}.attention.head_count_kv", heads)
    width = meta.get(f"{arch}.embedding_length")
    if not isinstance(layers, int) or not isinstance(heads, int) or not heads or not isinstance(width, int):
        return None
    head_dim = width // heads
    key = meta.get(f"{arch}.attention.key_length", head_dim)
    value = meta.get(f"{arch}.attention.value_length", head_dim)
    return int(layers) * int(kv_heads) * (int(key) + int(value)) * 2  # type: ignore[arg-type]


def estimate_mb(path: Path, context_length: int, slots: int) -> float:
    """What loading `path` with `slots` llama.cpp contexts of `context_length` tokens will take: the
    file (weights are mapped in whole once used), its vocabulary, a KV cache per slot, and compute
    buffers. A file whose header cannot be read is assumed to need a third more than its size for
    the cache."""
    size_mb = Path(path).stat().st_size / _MB
    try:
        meta = gguf_scalars(path)
    except (InvalidInput, OSError, UnicodeDecodeError):
        meta = {}
    per_token = kv_bytes_per_token(meta)
    kv_mb = size_mb / 3 if per_token is None else per_token * context_length / _MB
    vocab = meta.get("tokenizer.ggml.tokens.count")
    vocab_mb = vocab * _VOCAB_BYTES_PER_TOKEN / _MB if isinstance(vocab, int) else 0.0
    return round(size_mb + vocab_mb + slots * (kv_mb + _OVERHEAD_PER_SLOT_MB), 1)
