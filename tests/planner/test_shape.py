"""Model shapes from the packaged GGUF headers, and the KV-cache formula."""

from __future__ import annotations

import pytest

from appliance.errors import InvalidInput
from appliance.planner.shape import read_shape
from tests.planner.models import qwen, smollm2


def test_smollm2_header():
    s = smollm2()
    assert (s.architecture, s.layers, s.heads, s.kv_heads, s.embedding, s.head_dim) == (
        "llama",
        30,
        9,
        3,
        576,
        64,
    )
    assert (s.context_length, s.vocab, s.file_type) == (8192, 49152, "MOSTLY_Q4_1")
    assert 130e6 < s.parameters < 140e6  # "135M"
    # The output head is tied to the embeddings: every weight is read for each token.
    assert s.tied_output and s.decode_bytes == s.weight_bytes
    assert s.kv_bytes_per_token() == 2 * 30 * 3 * 64 * 2
    assert s.repacked_bytes == 0  # Q4_1 and Q8_0 stay in the mapped file


def test_qwen_coder_header(tmp_path):
    q = qwen(tmp_path)
    assert (q.architecture, q.layers, q.heads, q.kv_heads, q.embedding, q.head_dim) == (
        "qwen2",
        28,
        12,
        2,
        1536,
        128,
    )
    assert (q.context_length, q.file_type) == (32768, "MOSTLY_Q4_K_M")
    assert 1.5e9 < q.parameters < 1.8e9
    # Its own output head: the embedding matrix is not read per token.
    assert not q.tied_output and q.decode_bytes < q.weight_bytes
    assert q.kv_bytes_per_token() == 28672  # 2 * 28 * 2 * 128 * 2
    assert 4.5 < q.bits_per_weight < 5.5
    assert 0 < q.repacked_bytes < q.weight_bytes


def test_not_a_gguf_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(InvalidInput, match="GGUF"):
        read_shape(bad)
