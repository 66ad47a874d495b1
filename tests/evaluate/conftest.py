"""Fixtures for evaluation tests: the real SmolLM2 under llama.cpp, loaded once per module."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (scripts/build-llama-wheel.sh)")
    from appliance.models.llamacpp import LlamaCppRuntime
    from appliance.models.manifest import SMOLLM2, smollm2_path

    # One thread: on a small shared machine, llama.cpp's threads waiting on each other at every
    # step cost more than the second thread gains (a 41-token prompt: 1.2 s with one, 12 s with two).
    runtime = LlamaCppRuntime(smollm2_path(), SMOLLM2.name, context_length=2048, threads=1, slots=1)
    yield runtime
    runtime.close()
