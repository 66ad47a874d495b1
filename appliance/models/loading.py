"""How the service loads chat models from the manifest: which are installed, what each needs, the runtime."""

from __future__ import annotations

from pathlib import Path

from appliance.config import LLMSettings
from appliance.errors import NotReady
from appliance.models.embedder import available_cpus
from appliance.models.manifest import ModelSpec
from appliance.models.runtime import DEFAULT_CONTEXT_LENGTH, LLMRuntime
from appliance.models.sizing import estimate_mb


def installed_models(models_dir: Path) -> list[ModelSpec]:
    """The manifest's models whose files are here (what `auto` may route to): no load is tried for
    a model whose packages were never installed."""
    from appliance.models.manifest import QWEN_CODER, SMOLLM2, list_models, qwen_part_paths

    out = []
    for spec in list_models(models_dir):
        if spec is QWEN_CODER and not (models_dir / spec.file).is_file():
            try:
                qwen_part_paths()
            except NotReady:
                continue
        elif spec is not SMOLLM2 and spec is not QWEN_CODER and not (models_dir / spec.file).is_file():
            continue
        out.append(spec)
    return out


def context_length(llm: LLMSettings, spec: ModelSpec) -> int:
    """The context a model is loaded with: the setting, else its own capped (as load_runtime does)."""
    return llm.context_length or min(spec.context_length or DEFAULT_CONTEXT_LENGTH, DEFAULT_CONTEXT_LENGTH)


def need_mb(llm: LLMSettings, spec: ModelSpec, path: Path) -> float:
    """The memory a model will take as configured (appliance/models/sizing.py)."""
    return estimate_mb(path, context_length(llm, spec), llm.slots)


def load_configured(llm: LLMSettings, spec: ModelSpec, path: Path) -> LLMRuntime:
    """The runtime of `spec` with the [llm] settings' context, threads and slots."""
    from appliance.models.manifest import load_runtime

    return load_runtime(
        spec,
        path,
        context_length=llm.context_length or None,
        threads=llm.threads or serving_threads(),
        slots=llm.slots,
        batch_threads=llm.batch_threads or None,
    )


def serving_threads() -> int:
    """All cores but one. llama.cpp's threads wait for each other at every step, so one of them
    preempted by the server's own work (HTTP, SSE, jobs) stalls them all: measured on 2 cores,
    generation through the API ran at 13.6 tokens/s with 2 threads and 22.6 with 1
    (scripts/bench/llm.py)."""
    return max(1, available_cpus() - 1)


def default_model_name(models_dir: Path) -> str:
    """The embedded default: the Qwen coder when its parts are installed (`make run`), else SmolLM2."""
    from appliance.models.manifest import QWEN_CODER, SMOLLM2, qwen_part_paths

    if (models_dir / QWEN_CODER.file).is_file():
        return QWEN_CODER.name
    try:
        qwen_part_paths()
    except NotReady:
        return SMOLLM2.name
    return QWEN_CODER.name
