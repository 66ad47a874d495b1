"""Constrained decoding speed: llama-cpp-python's grammar sampler (whole vocabulary) vs the lazy one.

    python scripts/bench/grammar.py [--model SmolLM2-135M-Instruct] [--samples 6] [--threads 1]

Samples a strict JSON schema answer `--samples` times with each sampler (temperature 1, the same
seeds) and prints tokens per CPU-second, the ratio, how many outputs parse, and the share of
draws the grammar rejected (each one a draw again under the full mask). CPU time, not wall time:
the numbers hold on a busy machine, as long as --threads is 1.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from appliance.models.grammar import json_grammar
from appliance.models.lazy_grammar import LazyGrammarSampler, lazy_grammar_llama
from appliance.models.manifest import resolve_model

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 30},
        "age": {"type": "integer"},
        "email": {"anyOf": [{"type": "string", "maxLength": 40}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        "born": {"type": "string", "format": "date"},
    },
    "required": ["name", "age", "email", "tags", "born"],
    "additionalProperties": False,
}
PROMPT = "<|im_start|>user\nInvent a person.<|im_end|>\n<|im_start|>assistant\n"


def run(llm, llama_cpp, gbnf: str, samples: int, max_tokens: int) -> dict:
    prompt = llm.tokenize(PROMPT.encode(), special=True)
    tokens = valid = drawn = resampled = 0
    start = time.process_time()
    for seed in range(samples):
        llm.set_seed(seed)
        out = []
        grammar = llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False)
        for token in llm.generate(prompt, temp=1.0, top_p=0.95, repeat_penalty=1.0, grammar=grammar):
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token) or len(out) >= max_tokens:
                break
            out.append(token)
        tokens += len(out)
        try:
            json.loads(llm.detokenize(out).decode("utf-8", errors="replace"))
            valid += 1
        except ValueError:
            pass
        if isinstance(llm._sampler, LazyGrammarSampler):
            drawn += llm._sampler.sampled
            resampled += llm._sampler.resampled
    cpu = time.process_time() - start
    return {
        "tokens": tokens,
        "cpu_s": round(cpu, 2),
        "tokens_per_cpu_s": round(tokens / cpu, 1),
        "valid": f"{valid}/{samples}",
        "rejected_draws": round(resampled / drawn, 2) if drawn else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="SmolLM2-135M-Instruct", help="a manifest name or a GGUF path")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=200)
    args = ap.parse_args()
    import llama_cpp

    # Built-ins come from their packages (the Qwen coder is assembled into a models dir on first use).
    models_dir = Path(tempfile.gettempdir()) / "appliance-bench-models"
    path = str(resolve_model(args.model, models_dir)[1])
    gbnf = json_grammar(PERSON).gbnf
    kwargs = {"model_path": path, "n_ctx": 1024, "n_threads": args.threads, "n_threads_batch": args.threads}
    results = {}
    for name, cls in (("eager", llama_cpp.Llama), ("lazy", lazy_grammar_llama(llama_cpp))):
        llm = cls(**kwargs, verbose=False)
        results[name] = run(llm, llama_cpp, gbnf, args.samples, args.max_tokens)
        print(name, json.dumps(results[name]))
        del llm
    ratio = results["lazy"]["tokens_per_cpu_s"] / results["eager"]["tokens_per_cpu_s"]
    print(f"model {args.model}: lazy/eager tokens per CPU-second {ratio:.2f}x")


if __name__ == "__main__":
    main()
