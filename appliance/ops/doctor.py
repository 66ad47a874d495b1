"""`appliance doctor`: checks an installation, running or stopped, and says what is wrong and what to do."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from appliance import __version__
from appliance.config import Settings
from appliance.files import sha256_file
from appliance.ops.backup import DB_NAME, ensure_not_in_use

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"
MIN_FREE_BYTES = 5 * 1024**3
KEY_PACKAGES = (
    "torch",
    "sentence-transformers",
    "llama-cpp-python",
    "duckdb",
    "tantivy",
    "usearch",
    "litestar",
    "uvicorn",
    "vllm",
)


@dataclass
class Check:
    name: str
    status: str
    detail: str


def run_checks(settings: Settings, url: str | None = None, key: str | None = None) -> list[Check]:
    checks = [_versions()]
    status = _server_status(settings, url, key)
    running = isinstance(status, dict)
    checks.append(
        Check(
            "server",
            OK if running else INFO,
            f"running, appliance {status.get('version')}" if running else f"not running ({status})",
        )
    )
    checks += _models(settings)
    checks.append(_disk(settings.data_path))
    checks += _permissions(settings.data_path)
    checks.append(_indexes_running(status) if running else _indexes_stopped(settings))
    checks.append(_gpu())
    checks.append(_network(settings, status if running else None))
    return checks


# -- the running server ----------------------------------------------------------------------------
def _server_status(settings: Settings, url: str | None, key: str | None) -> dict | str:
    from appliance.client import ApiError, ApplianceClient, resolve_endpoint, server_trust

    try:
        url, key = resolve_endpoint(settings, url, key)
    except Exception as exc:  # no readable admin key: the server may run, but we cannot ask it
        return f"cannot ask it: {getattr(exc, 'detail', exc)}"
    try:
        with ApplianceClient(url, key, timeout=10, verify=server_trust(settings)) as client:
            return client.ops()
    except ApiError as exc:
        return (
            f"nothing answers at {url}"
            if exc.unreachable
            else f"{url} answered {exc.status}: {exc.detail[:200]}"
        )


# -- checks ------------------------------------------------------------------------------------------
def _versions() -> Check:
    found = []
    for name in KEY_PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            if name != "vllm":  # optional: GPU servers only
                found.append(f"{name} MISSING")
    missing = [f for f in found if f.endswith("MISSING")]
    detail = f"appliance {__version__}, python {platform.python_version()} ({sys.prefix}); " + ", ".join(
        found
    )
    return Check("versions", FAIL if missing else OK, detail)


def _models(settings: Settings) -> list[Check]:
    from appliance.models.catalog import MINILM_WEIGHTS_SHA256, default_embedding_dir
    from appliance.models.manifest import list_models

    checks = []
    if settings.embedding.model_dir:
        path = Path(settings.embedding.model_dir)
        checks.append(
            Check("embedding model", OK if path.is_dir() else FAIL, f"{path} (configured; not pinned)")
        )
    else:
        try:
            path = default_embedding_dir(verify=False)
            weights = next(path.glob("*.safetensors"), None) or next(path.glob("pytorch_model.bin"), None)
            good = weights is not None and sha256_file(weights) == MINILM_WEIGHTS_SHA256
            checks.append(
                Check(
                    "embedding model",
                    OK if good else FAIL,
                    f"{weights} sha256 {'matches its pin' if good else 'DOES NOT match its pin'}",
                )
            )
        except Exception as exc:
            checks.append(Check("embedding model", FAIL, str(getattr(exc, "detail", exc))))
    models_dir = Path(settings.llm.models_dir) if settings.llm.models_dir else settings.data_path / "models"
    usable = []
    for spec in list_models(models_dir if models_dir.is_dir() else None):
        path, note = _model_file(spec, models_dir)
        if path is None:
            checks.append(Check(f"model {spec.name}", INFO, note))
            usable += [spec.name] if note.startswith("parts") else []
            continue
        digest = sha256_file(path)
        good = spec.sha256 is None or digest == spec.sha256
        usable += [spec.name] if good else []
        checks.append(
            Check(
                f"model {spec.name}",
                OK if good else FAIL,
                f"{path} sha256 {digest[:16]}… " + ("matches its pin" if good else f"expected {spec.sha256}"),
            )
        )
    if not usable:
        checks.append(Check("chat model", FAIL, "no chat model is installed and intact"))
    return checks


def _model_file(spec, models_dir: Path) -> tuple[Path | None, str]:
    """The model's file if present; never assembles one (a 1 GB write is not a check)."""
    from appliance.models.manifest import QWEN_CODER, SMOLLM2, qwen_part_paths, smollm2_path

    try:
        if spec is SMOLLM2:
            return smollm2_path(), ""
        if spec is QWEN_CODER and not (models_dir / spec.file).is_file():
            qwen_part_paths()
            return None, f"parts installed; assembled into {models_dir / spec.file} on first load"
    except Exception as exc:
        return None, f"not installed ({getattr(exc, 'detail', exc)})"
    path = models_dir / spec.file
    return (path, "") if path.is_file() else (None, f"{path} is listed but missing")


def _disk(data: Path) -> Check:
    probe = data if data.exists() else data.parent
    usage = shutil.disk_usage(probe)
    detail = f"{usage.free / 1024**3:.1f} GiB free of {usage.total / 1024**3:.1f} GiB at {probe}"
    low = usage.free < MIN_FREE_BYTES or usage.free < 0.1 * usage.total
    return Check(
        "free disk",
        WARN if low else OK,
        detail + (" (low: backups and index rebuilds need room)" if low else ""),
    )


def _permissions(data: Path) -> list[Check]:
    if not data.is_dir():
        return [Check("data directory", FAIL, f"{data} does not exist")]
    st = data.stat()
    problems = []
    if st.st_mode & (stat.S_IWOTH | stat.S_IROTH | stat.S_IXOTH):
        problems.append(f"{data} is open to other users (mode {stat.filemode(st.st_mode)}; want 0750)")
    key = data / "admin.key"
    if key.exists():
        kst = key.stat()
        if kst.st_mode & 0o077:
            problems.append(f"{key} mode {stat.filemode(kst.st_mode)}; want 0600")
        if kst.st_uid != st.st_uid:
            problems.append(f"{key} is owned by uid {kst.st_uid}, the data directory by uid {st.st_uid}")
    db = data / DB_NAME
    if db.exists() and db.stat().st_uid != st.st_uid:
        problems.append(f"{db} is owned by uid {db.stat().st_uid}, the data directory by uid {st.st_uid}")
    if not problems and os.geteuid() == st.st_uid and not os.access(data, os.W_OK):
        problems.append(f"{data} is not writable by its owner")
    owner = _user_name(st.st_uid)
    return [
        Check(
            "data directory",
            FAIL if problems else OK,
            "; ".join(problems) or f"{data} owned by {owner}, mode {stat.filemode(st.st_mode)}",
        )
    ]


def _indexes_running(status: dict) -> Check:
    chunks = status["chunks"]
    counts = {name: s["count"] for name, s in status["indexes"].items()}
    behind = {name for name, s in status["indexes"].items() if s["applied_seq"] < s["outbox_seq"]}
    # An eventually consistent engine counts what it acknowledged a moment later: a count below
    # the catalogue's is lag there, not damage (its count above the catalogue's still is).
    lagging = {
        name
        for name, s in status["indexes"].items()
        if s.get("count_may_lag") and s["count"] < chunks and name not in behind
    }
    wrong = {name for name, c in counts.items() if c != chunks} - behind - lagging
    detail = f"DuckDB {chunks} chunks; " + ", ".join(f"{n} {c}" for n, c in counts.items())
    if not (behind or lagging or wrong):
        return Check("index consistency", OK, detail)
    if wrong:
        return Check(
            "index consistency",
            FAIL,
            detail + "; they disagree (restart the service: start-up rebuilds a disagreeing index)",
        )
    # While ingestion runs, the indexes trail the catalogue by the outbox: that is not damage.
    notes = ["indexes are catching up with the outbox"] if behind else []
    notes += [
        f"the {name} engine counts acknowledged writes late (eventually consistent); check again shortly"
        for name in sorted(lagging)
    ]
    return Check("index consistency", INFO, detail + "; " + "; ".join(notes))


def _indexes_stopped(settings: Settings) -> Check:
    import duckdb

    from appliance.index.spaces import generation_dir

    data = settings.data_path
    if not (data / DB_NAME).exists():
        return Check("index consistency", INFO, f"no catalogue yet in {data} (never started)")
    try:
        ensure_not_in_use(data)
        with duckdb.connect(str(data / DB_NAME), read_only=True) as con:
            chunks = con.execute("SELECT count(*) FROM chunks").fetchone()[0]
            own = _own_generations(con)
    except Exception as exc:
        return Check("index consistency", FAIL, f"cannot read the catalogue: {getattr(exc, 'detail', exc)}")
    counts = {"bm25": _bm25_count(data / "index" / "bm25")}
    # Other vector backends (a Qdrant cluster, say) are counted by the reconcile at start-up: the
    # doctor reads files, and connects to nothing.
    if settings.index.vector_backend == "usearch":
        # Collections on another embedder than the server's have their vectors in an index of their own.
        parts = [_vector_count(data / "index" / "vectors")] + [
            _vector_count(generation_dir(data / "index" / "collections", coll, gen)) for coll, gen in own
        ]
        unreadable = [p for p in parts if isinstance(p, str)]
        counts["vectors"] = unreadable[0] if unreadable else sum(parts)
    detail = f"DuckDB {chunks} chunks; " + ", ".join(f"{n} {c}" for n, c in counts.items())
    if settings.index.vector_backend != "usearch":
        detail += f"; vectors in {settings.index.vector_backend}: checked by the reconcile at start-up"
    agree = all(c == chunks for c in counts.values())
    # Stopped, the outbox may still hold changes a start will replay: a mismatch is repaired then.
    return Check(
        "index consistency",
        OK if agree else WARN,
        detail + ("" if agree else "; the next start replays the outbox or rebuilds the index"),
    )


def _own_generations(con) -> list[tuple[str, int]]:
    """Collections whose live vectors are in an index of their own (core/embedders.py); none in a
    catalogue from before migration 0018 (the next start migrates it)."""
    import duckdb

    try:
        rows = con.execute(
            "SELECT collection, CAST(json_extract(body, '$.live.generation') AS INTEGER) FROM collection_embedders"
        ).fetchall()
    except duckdb.CatalogException:
        return []
    return [(c, g) for c, g in rows if g]


def _bm25_count(path: Path) -> int | str:
    import tantivy

    try:
        num = tantivy.Index.open(str(path)).searcher().num_docs
    except Exception as exc:
        return f"unreadable ({exc})"
    return max(0, num - 1)  # one document holds the index's own metadata


def _vector_count(path: Path) -> int | str:
    from usearch.index import Index

    try:
        manifest = json.loads((path / "manifest.json").read_text())
        return sum(len(Index.restore(str(path / f["file"]), view=True)) for f in manifest["files"].values())
    except FileNotFoundError:
        return 0
    except Exception as exc:
        return f"unreadable ({exc})"


def _gpu() -> Check:
    devices = sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*"))
    smi = shutil.which("nvidia-smi")
    try:
        import torch

        cuda = torch.cuda.is_available()
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    except Exception as exc:
        return Check("gpu", WARN, f"torch cannot probe CUDA: {exc}")
    if cuda:
        return Check("gpu", OK, f"CUDA visible: {', '.join(names)}")
    if devices:
        return Check(
            "gpu",
            WARN,
            f"{', '.join(devices)} present but CUDA is not visible to torch "
            f"(driver, or DeviceAllow in the unit?){'' if smi else '; no nvidia-smi'}",
        )
    return Check("gpu", INFO, "no GPU: models run on the CPU (llama.cpp)")


def _network(settings: Settings, status: dict | None) -> Check:
    if not settings.network.guard:
        return Check("outbound network", WARN, "the network guard is off (settings network.guard = false)")
    if status is None:
        return Check("outbound network", INFO, "not running: no process to check (the guard is on)")
    net = status["network"]
    if net["outbound_attempts"]:
        last = net["recent"][-1] if net["recent"] else {}
        return Check(
            "outbound network",
            FAIL,
            f"{net['outbound_attempts']} outbound connection attempts refused "
            f"since start; last to {last.get('host')}:{last.get('port')} from {last.get('caller')}",
        )
    return Check("outbound network", OK, "no outbound connection attempted since start (guard on)")


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def render(checks: list[Check]) -> str:
    """The human view; `--json` prints the checks as records (cli/doctor.py)."""
    marks = {OK: "ok  ", WARN: "WARN", FAIL: "FAIL", INFO: "info"}
    return "\n".join(f"[{marks[c.status]}] {c.name}: {c.detail}" for c in checks)
