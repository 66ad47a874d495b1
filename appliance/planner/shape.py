"""A model's shape read from its GGUF header: parameters, layers, heads, KV heads, width, context, quantisation."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from appliance.errors import InvalidInput
from appliance.models.gguf_header import read_header

# Measured here with llama-cpp-python 0.3.36: these weights are copied to anonymous memory on load, beside
# the memory-mapped file (a Q4_K_M model's resident set is about its file plus its Q4_K tensors again).
REPACKED_TYPES = frozenset({"Q4_0", "Q4_K", "IQ4_NL"})
KV_CACHE_BYTES = 2  # llama.cpp and vLLM keep the KV cache in f16 by default


@dataclass(frozen=True, slots=True)
class ModelShape:
    name: str
    architecture: str
    parameters: int  # every weight, embeddings included
    embedding_parameters: int  # the token embedding matrix
    layers: int
    heads: int
    kv_heads: int
    embedding: int  # model width
    head_dim: int
    vocab: int
    context_length: int  # trained context
    file_type: str  # quantisation, e.g. MOSTLY_Q4_K_M
    file_bytes: int
    weight_bytes: int  # bytes of all tensors
    decode_bytes: int  # bytes read for each generated token: every tensor but the embedding rows not used
    tied_output: bool  # no output head of its own: the embedding matrix is the output projection
    repacked_bytes: (
        int  # tensors llama.cpp's CPU backend copies into its interleaved layout (Q4_0, Q4_K, IQ4_NL)
    )

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.weight_bytes / max(1, self.parameters)

    @property
    def matmul_parameters(self) -> int:
        """Weights multiplied for each token: all but the embedding lookup, the output head included."""
        tied = self.embedding_parameters if self.tied_output else 0
        return self.parameters - self.embedding_parameters + tied

    def kv_bytes_per_token(self, cache_bytes: int = KV_CACHE_BYTES) -> int:
        """K and V, every layer, every KV head: 2 * layers * kv_heads * head_dim * bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * cache_bytes

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "bits_per_weight": round(self.bits_per_weight, 2),
            "kv_bytes_per_token": self.kv_bytes_per_token(),
        }


_cache: dict[tuple, ModelShape] = {}
_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Tensor:
    name: str
    type_name: str
    n_elements: int
    n_bytes: int


def _parse(path: Path) -> tuple[dict, list[_Tensor]]:
    """The header's scalar key-values and its tensor table with each tensor's bytes, through the
    appliance's one GGUF header reader (models/gguf_header.py)."""
    import gguf

    header = read_header(path)
    fields = {k: v for k, v in header.metadata.items() if not isinstance(v, list)}
    tensors = []
    for name, (type_name, elements) in header.tensors.items():
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
        tensors.append(_Tensor(name, type_name, elements, elements // block * type_size))
    return fields, tensors


def read_shape(path: Path, name: str | None = None) -> ModelShape:
    """The shape of the GGUF file at `path` (cached per file identity)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise InvalidInput(f"cannot read model file {path}: {exc.strerror}") from None
    key = (str(path.absolute()), st.st_size, st.st_mtime_ns, name)
    with _lock:
        if key in _cache:
            return _cache[key]
    import gguf

    try:
        fields, tensor_list = _parse(path)
    except (ValueError, OSError, KeyError, __import__("struct").error) as exc:
        raise InvalidInput(f"{path} is not a readable GGUF file: {exc}") from None
    arch = fields.get("general.architecture", "")
    layers = int(fields.get(f"{arch}.block_count", 0))
    heads = int(fields.get(f"{arch}.attention.head_count", 0))
    if not layers or not heads:
        raise InvalidInput(f"{path}: the GGUF header lacks {arch}.block_count or its head count")
    kv_heads = int(fields.get(f"{arch}.attention.head_count_kv", heads))
    width = int(fields.get(f"{arch}.embedding_length", 0))
    head_dim = int(fields.get(f"{arch}.attention.key_length", 0)) or width // heads
    tensors = {t.name: t for t in tensor_list}
    embd = tensors.get("token_embd.weight")
    vocab = int(fields.get(f"{arch}.vocab_size", 0))
    if embd is not None and width:
        vocab = max(vocab, embd.n_elements // width)
    weight_bytes = sum(t.n_bytes for t in tensor_list)
    parameters = sum(t.n_elements for t in tensor_list)
    embd_params = embd.n_elements if embd is not None else 0
    # With its own output head, only one embedding row is read per token; a tied head reads the whole matrix.
    tied = "output.weight" not in tensors
    decode_bytes = weight_bytes - (embd.n_bytes if embd is not None and not tied else 0)
    file_type_id = fields.get("general.file_type")
    try:
        file_type = gguf.LlamaFileType(int(file_type_id)).name if file_type_id is not None else "unknown"
    except ValueError:
        file_type = f"type {file_type_id}"
    shape = ModelShape(
        name=name or str(fields.get("general.name", path.stem)),
        architecture=arch,
        parameters=parameters,
        embedding_parameters=embd_params,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        embedding=width,
        head_dim=head_dim,
        vocab=vocab,
        context_length=int(fields.get(f"{arch}.context_length", 0)),
        file_type=file_type,
        file_bytes=st.st_size,
        weight_bytes=weight_bytes,
        decode_bytes=decode_bytes,
        tied_output=tied,
        repacked_bytes=sum(
            t.n_bytes for t in tensor_list if t.type_name in REPACKED_TYPES and t.name != "token_embd.weight"
        ),
    )
    with _lock:
        _cache[key] = shape
    return shape
