"""Grammar-constrained sampling that checks the grammar only where it matters (llama.cpp's own order).

llama-cpp-python 0.3.36 puts the grammar sampler in the chain ahead of top-k, so every token's
grammar check runs over the whole vocabulary (49k entries for SmolLM2, 152k for Qwen): about
40% of the decode time of a JSON answer on a small CPU. llama.cpp's own server samples first
and asks the grammar about the one token it picked; only when the grammar rejects it does it
mask the whole vocabulary and sample again (`common_sampler_sample`). The output distribution
is the same: a token the grammar accepts is kept with the probability the chain gave it; a
rejected one is replaced by a draw from the masked distribution.
"""

from __future__ import annotations

import ctypes
import functools
import math
from typing import Any

import numpy as np

# llama_token_data {int32 id; float logit; float p}: the struct llama.cpp's samplers read.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


class LazyGrammarSampler:
    """Stands where llama-cpp-python keeps its sampler (`Llama._sampler`): `sample(ctx, idx)`.

    `chain` is the library's chain built without the grammar (penalties, top-k/p, temperature, the
    draw), `grammar` a llama.cpp grammar sampler of its own. Penalties see a rejected first draw as
    accepted as well; the runtime turns them off under a grammar (repeat_penalty 1.0), so that
    history changes nothing."""

    def __init__(self, llama_cpp: Any, chain: Any, vocab: Any, gbnf: str, n_vocab: int) -> None:
        self._llama_cpp = llama_cpp
        self._chain = chain  # a LlamaSampler: frees its chain when collected
        self._grammar = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        if not self._grammar:
            raise ValueError("llama.cpp refused the grammar")
        self._n_vocab = n_vocab
        self._full: np.ndarray | None = None  # the whole vocabulary, allocated at the first rejection
        self._one = np.zeros(1, dtype=_TOKEN_DATA)
        self.resampled = 0  # draws the grammar rejected (for tests and benchmarks)
        self.sampled = 0

    def _array(self, data: np.ndarray) -> Any:
        return self._llama_cpp.llama_token_data_array(
            data=data.ctypes.data_as(ctypes.POINTER(self._llama_cpp.llama_token_data)),
            size=len(data),
            selected=-1,
            sorted=False,
        )

    def _allowed(self, token: int) -> bool:
        self._one[0] = (token, 1.0, 0.0)
        arr = self._array(self._one)
        self._llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        return not math.isinf(float(self._one[0]["logit"]))

    def sample(self, ctx: Any, idx: int = -1) -> int:
        lc = self._llama_cpp
        self.sampled += 1
        token = lc.llama_sampler_sample(self._chain.sampler, ctx.ctx, idx)  # also accepts it in the chain
        if not self._allowed(token):
            self.resampled += 1
            logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx.ctx, idx), shape=(self._n_vocab,))
            if self._full is None:
                self._full = np.empty(self._n_vocab, dtype=_TOKEN_DATA)
            data = self._full
            data["id"] = _token_ids(self._n_vocab)  # again each time: the chain sorts in place
            data["logit"] = logits
            data["p"] = 0.0
            arr = self._array(data)
            lc.llama_sampler_apply(self._grammar, ctypes.byref(arr))
            lc.llama_sampler_apply(self._chain.sampler, ctypes.byref(arr))
            # A sampler may point `data` elsewhere (llama.cpp's note on the struct): read through it.
            token = int(arr.data[arr.selected].id)
            lc.llama_sampler_accept(self._chain.sampler, token)
        lc.llama_sampler_accept(self._grammar, token)
        return token

    def close(self) -> None:
        if self._grammar:
            self._llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None

    def __del__(self) -> None:
        self.close()


@functools.cache
def _token_ids(n_vocab: int) -> np.ndarray:
    ids = np.arange(n_vocab, dtype=np.int32)
    ids.flags.writeable = False  # shared by every sampler of a vocabulary this size
    return ids


@functools.cache
def lazy_grammar_llama(llama_cpp: Any) -> type:
    """A `llama_cpp.Llama` whose grammar-constrained generations sample with LazyGrammarSampler.

    `_init_sampler` is private API of the pinned llama-cpp-python (0.3.36): `generate()` builds its
    sampler there and only ever calls `.sample(ctx, idx)` on it."""

    class LazyGrammarLlama(llama_cpp.Llama):
        def _init_sampler(self, *args: Any, grammar: Any = None, **kwargs: Any) -> Any:
            chain = super()._init_sampler(*args, grammar=None, **kwargs)
            if grammar is None:
                return chain
            return LazyGrammarSampler(llama_cpp, chain, self._model.vocab, grammar._grammar, self._n_vocab)

    return LazyGrammarLlama
