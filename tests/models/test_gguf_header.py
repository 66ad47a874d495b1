"""The one GGUF header reader (registry intake, pool sizing, the planner's model shapes) on a real model."""

from __future__ import annotations

from appliance.models.gguf_header import read_header
from appliance.models.manifest import smollm2_path
from appliance.models.sizing import gguf_scalars


def test_the_packaged_small_models_header_shape_vocabulary_and_tensor_table():
    header = read_header(smollm2_path())
    meta = header.metadata
    assert header.architecture == "llama" and header.context_length == meta["llama.context_length"]
    vocab = header.array_lengths["tokenizer.ggml.tokens"]
    width = meta["llama.embedding_length"]
    assert vocab == 49152 and "tokenizer.ggml.tokens" not in meta  # its length, not its 49k strings
    _, elements = header.tensors["token_embd.weight"]
    assert elements == vocab * width
    assert header.parameters == sum(n for _, n in header.tensors.values())
    assert sum(header.tensor_types.values()) == header.tensor_count == len(header.tensors)
    # The pool's sizing reads the same header: scalars, and the vocabulary's size.
    scalars = gguf_scalars(smollm2_path())
    assert (
        scalars["tokenizer.ggml.tokens.count"] == vocab
        and scalars["llama.block_count"] == meta["llama.block_count"]
    )
