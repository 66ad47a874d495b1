"""The lazy grammar sampler against llama-cpp-python's own (the grammar over the whole vocabulary)."""

from __future__ import annotations

import json
import re

import pytest

from appliance.models.grammar import json_grammar
from appliance.models.lazy_grammar import LazyGrammarSampler, lazy_grammar_llama
from appliance.models.manifest import smollm2_path

llama_cpp = pytest.importorskip("llama_cpp")

PROMPT = "<|im_start|>user\nInvent a person.<|im_end|>\n<|im_start|>assistant\n"
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def models():
    kwargs = {"model_path": str(smollm2_path()), "n_ctx": 512, "n_threads": 2, "verbose": False}
    return llama_cpp.Llama(**kwargs), lazy_grammar_llama(llama_cpp)(**kwargs)


def _generate(llm, gbnf: str, temp: float, seed: int = 0, limit: int = 120) -> tuple[str, object]:
    llm.set_seed(seed)
    prompt = llm.tokenize(PROMPT.encode(), special=True)
    grammar = llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False)
    out = []
    for token in llm.generate(prompt, temp=temp, repeat_penalty=1.0, grammar=grammar):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token) or len(out) >= limit:
            break
        out.append(token)
    return llm.detokenize(out).decode("utf-8", errors="replace"), llm._sampler


def test_greedy_output_is_the_eager_samplers_token_for_token(models):
    """Greedy: the argmax the grammar allows, whether it masks first (eager) or checks the pick (lazy)."""
    eager, lazy = models
    gbnf = json_grammar(PERSON).gbnf
    expected, eager_sampler = _generate(eager, gbnf, temp=0.0)
    got, lazy_sampler = _generate(lazy, gbnf, temp=0.0)
    assert isinstance(lazy_sampler, LazyGrammarSampler) and not isinstance(eager_sampler, LazyGrammarSampler)
    assert got == expected
    json.loads(got)


def test_a_token_the_grammar_rejects_is_drawn_again_under_the_grammar(models):
    """A grammar the model would never follow on its own: every forced token is a resample."""
    _, lazy = models
    text, sampler = _generate(lazy, 'root ::= "zq-" [0-9] [0-9] [0-9] "!"', temp=1.0, seed=7)
    assert re.fullmatch(r"zq-\d{3}!", text), text
    assert sampler.resampled >= 3, (sampler.resampled, sampler.sampled)


@pytest.mark.parametrize("seed", range(2))
def test_sampled_json_is_valid_and_mostly_unmasked(models, seed):
    _, lazy = models
    text, sampler = _generate(lazy, json_grammar(PERSON).gbnf, temp=1.0, seed=seed)
    value = json.loads(text)
    assert set(value) == {"name", "age", "tags"} and isinstance(value["age"], int)
    assert 0 < sampler.sampled and sampler.resampled < sampler.sampled


def test_no_grammar_leaves_the_librarys_sampler(models):
    _, lazy = models
    llm = lazy
    llm.set_seed(1)
    tokens = llm.generate(llm.tokenize(PROMPT.encode(), special=True), temp=0.0)
    next(tokens)
    tokens.close()
    assert not isinstance(llm._sampler, LazyGrammarSampler)
