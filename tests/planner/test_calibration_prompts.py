"""The calibration's prompts: about the asked number of tokens, never empty, unlike each other."""

from __future__ import annotations

import pytest

from appliance.planner.calibrate import _prompt


class ByteTokens:
    """A byte-level tokenizer: one token per byte, so a ten-digit seed tag alone is a dozen tokens."""

    def prompt_tokens(self, text: str) -> list[int]:
        return list(text.encode())


@pytest.mark.parametrize("tokens", [1, 4, 8, 32, 256])
@pytest.mark.parametrize("seed", [7, 1_796_650_000])
def test_a_prompt_is_never_empty_and_shrinks_towards_its_budget(tokens, seed):
    runtime = ByteTokens()
    text = _prompt(runtime, tokens, seed)
    assert text.startswith(f"[{seed}] ") and len(text.split()) >= 2
    # Over budget only when the tag and one word alone are over it.
    assert len(runtime.prompt_tokens(text)) <= max(
        tokens, len(runtime.prompt_tokens(" ".join(text.split()[:2])))
    )


def test_prompts_of_different_seeds_share_no_prefix():
    runtime = ByteTokens()
    assert _prompt(runtime, 64, 1)[:3] != _prompt(runtime, 64, 2)[:3]
