"""A GGUF file's header read and checked without loading it: metadata, tensor table, and whether the data fits.

Built on the `gguf` library's definitions (value types, quantisation block sizes, file types, key
names) with a reader of our own: `gguf.GGUFReader` decodes every element of every array into numpy
objects, which took 14.8 s on Gemma 3's 262k-token vocabulary; this skips arrays it does not need
and reads the same header in well under a second. Every length is checked against the file's size
first, so a corrupt or truncated file is a clear `HeaderError`, never a huge allocation.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

GGUF_MAGIC = b"GGUF"
# Keys a header may hold at most; real models have a few dozen.
_MAX_KV = 4096
_MAX_TENSORS = 1_000_000
_MAX_STRING = 16 * 1024 * 1024  # a chat template is a few KB; 16 MB is either broken or hostile
_MAX_DIMS = 8


class HeaderError(ValueError):
    """The file is not a usable GGUF model: the reason says what is wrong."""


@dataclass(frozen=True, slots=True)
class GGUFHeader:
    version: int
    metadata: dict[str, object]  # scalars and strings; arrays of strings are kept only when short
    tensor_count: int
    data_bytes: int  # bytes the tensor table says the weights take
    parameters: int
    file_size: int
    tensor_types: dict[str, int] = field(default_factory=dict)  # quantisation type name -> tensors
    # Every metadata array's length, kept or not (the vocabulary: "tokenizer.ggml.tokens").
    array_lengths: dict[str, int] = field(default_factory=dict)
    # Each tensor: its name -> (quantisation type name, elements).
    tensors: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture") or "")

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if isinstance(value, int) and value > 0 else None

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def chat_template_sha256(self) -> str | None:
        template = self.chat_template
        return hashlib.sha256(template.encode("utf-8")).hexdigest() if template is not None else None

    @property
    def quantisation(self) -> str:
        """The file type (`general.file_type`, e.g. Q4_K_M), else the most common tensor type."""
        import gguf

        file_type = self.metadata.get("general.file_type")
        if isinstance(file_type, int):
            try:
                return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_")
            except ValueError:
                pass
        if self.tensor_types:
            return max(self.tensor_types.items(), key=lambda kv: kv[1])[0]
        return "unknown"

    @property
    def licence(self) -> str:
        return str(self.metadata.get("general.license") or "")

    @property
    def display_name(self) -> str:
        return str(self.metadata.get("general.name") or self.metadata.get("general.basename") or "")


class _Cursor:
    def __init__(self, buf: mmap.mmap, size: int) -> None:
        self.buf, self.size, self.pos = buf, size, 0

    def take(self, n: int) -> int:
        if n < 0 or self.pos + n > self.size:
            raise HeaderError(
                f"the header runs past the end of the file (at byte {self.pos}): truncated or corrupt"
            )
        start = self.pos
        self.pos += n
        return start

    def unpack(self, fmt: str) -> tuple:
        s = struct.Struct("<" + fmt)
        return s.unpack_from(self.buf, self.take(s.size))

    def u32(self) -> int:
        return self.unpack("I")[0]

    def u64(self) -> int:
        return self.unpack("Q")[0]

    def string(self) -> str:
        n = self.u64()
        if n > _MAX_STRING:
            raise HeaderError(f"a header string claims {n} bytes: corrupt")
        start = self.take(n)
        return bytes(self.buf[start : start + n]).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.u64()
        if n > _MAX_STRING:
            raise HeaderError(f"a header string claims {n} bytes: corrupt")
        self.take(n)


def _scalar_formats() -> dict[int, str]:
    import gguf

    t = gguf.GGUFValueType
    return {
        t.UINT8: "B",
        t.INT8: "b",
        t.UINT16: "H",
        t.INT16: "h",
        t.UINT32: "I",
        t.INT32: "i",
        t.FLOAT32: "f",
        t.BOOL: "?",
        t.UINT64: "Q",
        t.INT64: "q",
        t.FLOAT64: "d",
    }


def _value(
    cur: _Cursor, vtype: int, formats: dict[int, str], keep_arrays: bool, lengths: dict[str, int], key: str
) -> object:
    import gguf

    if vtype in formats:
        return cur.unpack(formats[vtype])[0]
    if vtype == gguf.GGUFValueType.STRING:
        return cur.string()
    if vtype != gguf.GGUFValueType.ARRAY:
        raise HeaderError(f"unknown metadata value type {vtype}: corrupt or from a newer GGUF version")
    item_type, count = cur.unpack("IQ")
    lengths[key] = count
    if item_type in formats:
        width = struct.calcsize(formats[item_type])
        if count > (cur.size - cur.pos) // max(1, width):
            raise HeaderError(
                f"a metadata array claims {count} items, more than the file holds: truncated or corrupt"
            )
        start = cur.take(width * count)
        if keep_arrays and count <= 64:
            return list(struct.unpack_from(f"<{count}{formats[item_type]}", cur.buf, start))
        return None
    if item_type == gguf.GGUFValueType.STRING:
        if count > (cur.size - cur.pos) // 8:
            raise HeaderError(
                f"a metadata array claims {count} strings, more than the file holds: truncated or corrupt"
            )
        if keep_arrays and count <= 64:
            return [cur.string() for _ in range(count)]
        for _ in range(count):
            cur.skip_string()
        return None
    raise HeaderError(f"metadata arrays of type {item_type} are not supported: corrupt")


def read_header(path: Path) -> GGUFHeader:
    """Parse and check `path`'s GGUF header and tensor table; HeaderError says why it is unusable."""
    import gguf

    path = Path(path)
    size = path.stat().st_size
    if size < 24:
        raise HeaderError(f"the file is {size} bytes: too short to be a GGUF model")
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != GGUF_MAGIC:
            raise HeaderError("not a GGUF file (its first bytes are not the GGUF magic)")
        cur = _Cursor(buf, size)
        cur.take(4)
        version = cur.u32()
        if version not in (2, 3):
            raise HeaderError(f"GGUF version {version} is not supported (2 and 3 are)")
        tensor_count, kv_count = cur.u64(), cur.u64()
        if kv_count > _MAX_KV or tensor_count > _MAX_TENSORS:
            raise HeaderError(f"the header claims {kv_count} keys and {tensor_count} tensors: corrupt")
        formats = _scalar_formats()
        metadata: dict[str, object] = {}
        lengths: dict[str, int] = {}
        for _ in range(kv_count):
            key = cur.string()
            vtype = cur.u32()
            value = _value(cur, vtype, formats, key.startswith("general."), lengths, key)
            if value is not None:
                metadata[key] = value
        tensors: list[tuple[str, int, int, int]] = []  # name, type, elements, offset
        for _ in range(tensor_count):
            name = cur.string()
            n_dims = cur.u32()
            if not 0 < n_dims <= _MAX_DIMS:
                raise HeaderError(f"tensor {name!r} has {n_dims} dimensions: corrupt")
            dims = cur.unpack(f"{n_dims}Q")
            ttype, offset = cur.unpack("IQ")
            tensors.append((name, ttype, math.prod(dims), offset))
        alignment = metadata.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise HeaderError(f"general.alignment {alignment!r} is not a power of two: corrupt")
        data_start = cur.pos + (-cur.pos % alignment)
    end, parameters, types, table = 0, 0, {}, {}
    for name, ttype, elements, offset in tensors:
        try:
            qtype = gguf.GGMLQuantizationType(ttype)
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise HeaderError(f"tensor {name!r} has unknown type {ttype}: corrupt or unsupported") from None
        if elements % block:
            raise HeaderError(
                f"tensor {name!r} has {elements} elements, not whole {qtype.name} blocks: corrupt"
            )
        end = max(end, offset + elements // block * type_size)
        parameters += elements
        types[qtype.name] = types.get(qtype.name, 0) + 1
        table[name] = (qtype.name, elements)
    if data_start + end > size:
        raise HeaderError(
            f"the file is {size} bytes but its tensors need {data_start + end}: truncated "
            f"(missing {data_start + end - size} bytes)"
        )
    if not metadata.get("general.architecture"):
        raise HeaderError("the header names no general.architecture: not a model llama.cpp can load")
    return GGUFHeader(
        version=version,
        metadata=metadata,
        tensor_count=tensor_count,
        data_bytes=end,
        parameters=parameters,
        file_size=size,
        tensor_types=types,
        array_lengths=lengths,
        tensors=table,
    )
