"""The model registry over a real DuckDB with real small GGUF models: intake (header, sha256, a probe in a
child process, tags), rejection of corrupt, truncated, non-GGUF and oversized files, aliases with their
history, rollback, and resolving a reference to verified weights."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from appliance.db.connection import Database
from appliance.db.migrations import migrate
from appliance.db.registry import RegistryStore
from appliance.errors import Conflict, InvalidInput, NotFound, NotReady
from appliance.files import sha256_file
from appliance.models.builtin_models import (
    GEMMA3_270M_SHA256,
    GEMMA3_270M_SIZE,
    assemble_gemma3_270m,
    import_builtins,
)
from appliance.models.catalog import MINILM_NAME
from appliance.models.manifest import SMOLLM2, smollm2_path
from appliance.models.probe import ProbeLimits
from appliance.models.registry import IntakeLimits, ModelRegistry

LIMITS = IntakeLimits(
    max_bytes=2 * 1024**3, probe=ProbeLimits(memory_bytes=2 * 1024**3, timeout_s=300, max_tokens=4)
)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("registry")


@pytest.fixture(scope="module")
def registry(root):
    db = Database(root / "registry.duckdb")
    migrate(db)
    yield ModelRegistry(RegistryStore(db), root / "models", LIMITS)
    db.close()


@pytest.fixture(scope="module")
def smollm2(registry):
    """SmolLM2 registered through intake (probed once for the module)."""
    return registry.register_file(smollm2_path(), name="tiny")


@pytest.fixture(scope="module")
def gemma(registry, root):
    path = assemble_gemma3_270m(root / "models")
    return registry.register_file(path)


def test_intake_verifies_probes_and_tags_smollm2_from_its_header_and_probe(registry, smollm2):
    assert (smollm2.name, smollm2.version, smollm2.state, smollm2.reason) == ("tiny", 1, "ready", None)
    assert smollm2.sha256 == SMOLLM2.sha256 and smollm2.size_bytes == SMOLLM2.size
    assert (smollm2.format, smollm2.quantisation, smollm2.architecture) == ("gguf", "Q4_1", "llama")
    assert smollm2.context_length == 8192 and smollm2.licence == "Apache-2.0"
    assert smollm2.chat_template_sha256 is not None and len(smollm2.chat_template_sha256) == 64
    # Tags come from what the probe did (generation, the sandboxed template, JSON output) and the header.
    assert {"completion", "chat", "json_output", "arch:llama", "quant:Q4_1"} <= set(smollm2.tags)
    assert "code" not in smollm2.tags
    probe = smollm2.probe
    assert probe["loaded"] and probe["chat_template"]["renders"] and probe["completion"]["tokens"] > 0
    assert probe["tokens_per_s"] > 0 and probe["resident_bytes"] > 0
    # The same bytes again are the version they already are.
    assert registry.register_file(smollm2_path(), name="tiny").version == 1


def test_gemma_3_270m_is_imported_and_probed_as_a_completion_model(gemma):
    assert gemma.sha256 == GEMMA3_270M_SHA256 and gemma.size_bytes == GEMMA3_270M_SIZE
    assert (gemma.name, gemma.state, gemma.licence) == ("Gemma-3-270m", "ready", "Gemma Terms of Use")
    assert (gemma.architecture, gemma.quantisation, gemma.context_length) == ("gemma3", "Q4_K_M", 32768)
    # The base model's file carries no chat template: it completes text, it does not chat.
    assert gemma.chat_template_sha256 is None and gemma.probe["chat_template"]["renders"] is False
    assert {"completion", "long-context", "arch:gemma3", "quant:Q4_K_M"} <= set(gemma.tags)
    assert "chat" not in gemma.tags


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_corrupt_truncated_non_gguf_and_oversized_files_are_rejected_with_their_reason(registry, root):
    bad = root / "bad"
    bad.mkdir()
    source = smollm2_path().read_bytes()
    not_gguf = registry.register_file(_write(bad / "notes.gguf", b"just some text, not a model\n" * 10))
    assert not_gguf.state == "rejected" and "not a GGUF file" in not_gguf.reason
    truncated = registry.register_file(_write(bad / "truncated.gguf", source[: len(source) // 2]))
    assert truncated.state == "rejected" and "truncated" in truncated.reason
    # A header whose key count is garbage: caught before any allocation.
    corrupt = registry.register_file(
        _write(bad / "corrupt.gguf", source[:16] + b"\xff" * 8 + source[24:4096])
    )
    assert corrupt.state == "rejected" and "corrupt" in corrupt.reason
    small = ModelRegistry(
        registry.store, registry.models_dir, IntakeLimits(max_bytes=1_000_000, probe=LIMITS.probe)
    )
    oversized = small.register_file(smollm2_path(), name="too-big")
    assert oversized.state == "rejected" and oversized.reason.startswith("oversized")
    for version in (not_gguf, truncated, corrupt, oversized):
        assert version.probe is None  # never loaded
        with pytest.raises(Conflict, match="rejected"):
            registry.resolve(f"{version.name}@{version.version}")
        with pytest.raises(Conflict, match="never be promoted"):
            registry.move_alias(version.name, "production", version.version, actor="test")


def test_a_file_that_is_not_there_or_a_bad_name_is_a_clear_error(registry, root):
    with pytest.raises(InvalidInput, match="not a file"):
        registry.register_file(root / "missing.gguf")
    with pytest.raises(InvalidInput, match="invalid model name"):
        registry.register_file(smollm2_path(), name="../up")


def test_aliases_move_with_history_rows_and_rollback_pops_back(registry, smollm2, gemma, root):
    # A second ready version of "tiny": the Gemma bytes (probed above), pinned under the same family.
    second = registry.register_pinned(
        "tiny", "chat", "llama.cpp", Path(gemma.path), gemma.sha256, gemma.size_bytes, "test", ["completion"]
    )
    assert (second.version, second.state) == (2, "ready")
    registry.move_alias("tiny", "production", 1, actor="ann", reason="first")
    registry.move_alias("tiny", "production", 2, actor="bob", reason="better")
    with pytest.raises(Conflict, match="already version 2"):
        registry.move_alias("tiny", "production", 2, actor="bob")
    assert registry.resolve("tiny@production").version == 2
    assert registry.resolve("tiny").version == 2  # a bare family name: its production version
    assert registry.resolve("tiny@1").version == 1
    assert registry.rollback_target("tiny", "production") == 1
    registry.move_alias("tiny", "production", 1, actor="ann", action="rollback")
    with pytest.raises(Conflict, match="no earlier version"):
        registry.rollback_target("tiny", "production")
    moves = registry.history("tiny")
    assert [(m.alias, m.action, m.previous_version, m.version, m.actor) for m in moves] == [
        ("production", "promote", None, 1, "ann"),
        ("production", "promote", 1, 2, "bob"),
        ("production", "rollback", 2, 1, "ann"),
    ]
    assert [m.id for m in moves] == sorted(m.id for m in moves)
    with pytest.raises(NotFound):
        registry.resolve("tiny@staging")
    with pytest.raises(InvalidInput, match="invalid alias"):
        registry.move_alias("tiny", "Prod!", 1, actor="x")


def test_builtins_are_imported_once_with_default_and_embedding_aliases(registry):
    done = import_builtins(registry, registry.models_dir.parent, SMOLLM2.name, MINILM_NAME)
    assert {SMOLLM2.name, MINILM_NAME} <= set(done)
    again = import_builtins(registry, registry.models_dir.parent, SMOLLM2.name, MINILM_NAME)
    assert again == done
    smol = registry.family(SMOLLM2.name)
    assert len(smol.versions) == 1 and smol.aliases == {"default": 1}
    assert registry.family(MINILM_NAME).aliases == {"embedding": 1}
    assert registry.resolve("default").name == SMOLLM2.name
    assert registry.resolve("embedding").kind == "embedding"
    assert len(registry.history(SMOLLM2.name)) == 1  # the second import moved nothing


def test_default_is_held_by_one_chat_family_and_moving_it_leaves_a_row_in_both(registry, smollm2):
    import_builtins(registry, registry.models_dir.parent, SMOLLM2.name, MINILM_NAME)
    registry.move_alias("tiny", "default", 1, actor="ann", reason="try the registered copy")
    assert registry.resolve("default").name == "tiny"
    assert "default" not in registry.family(SMOLLM2.name).aliases
    assert registry.history(SMOLLM2.name)[-1].action == "remove"
    with pytest.raises(InvalidInput, match="embedding model"):
        registry.move_alias(MINILM_NAME, "default", 1, actor="ann")
    registry.move_alias(SMOLLM2.name, "default", 1, actor="ann")
    # `production` held by two families is ambiguous as a bare alias.
    registry.move_alias(SMOLLM2.name, "production", 1, actor="ann")
    with pytest.raises(Conflict, match="several models"):
        registry.resolve("production")


def test_weights_whose_hash_changed_refuse_to_resolve(registry, root):
    copy = root / "copy" / "model.gguf"
    copy.parent.mkdir()
    shutil.copyfile(smollm2_path(), copy)
    registry.register_pinned(
        "pinned-copy", "chat", "llama.cpp", copy, sha256_file(copy), None, "test", ["chat"]
    )
    assert registry.resolve("pinned-copy").path == str(copy)
    with copy.open("r+b") as f:  # one byte of the weights changes, same size
        f.seek(os.path.getsize(copy) - 10)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    with pytest.raises(NotReady, match="sha256"):
        registry.resolve("pinned-copy")


def test_the_inbox_takes_a_file_once_it_stopped_changing_and_moves_it_into_the_store(registry, root):
    from appliance.models.inbox import ModelInbox

    folder = root / "inbox"
    folder.mkdir()
    inbox = ModelInbox(folder, registry.take_from_inbox)
    dropped = folder / "half-copied.gguf"
    dropped.write_bytes(smollm2_path().read_bytes()[:100_000])
    (folder / "still-coming.gguf.part").write_bytes(b"GGUF")
    assert inbox.scan() == []  # first look: remembered, not taken
    with dropped.open("ab") as f:  # still being written
        f.write(b"\x00" * 10)
    assert inbox.scan() == []
    assert inbox.scan() == [dropped]  # unchanged since the last look
    assert not dropped.exists() and (folder / "still-coming.gguf.part").exists()
    family = registry.family("half-copied")
    (version,) = family.versions
    assert (version.state, version.source) == ("rejected", "inbox") and "truncated" in version.reason
    assert Path(version.path).is_file() and Path(version.path).parent.parent == registry.models_dir / "store"
    assert sha256_file(Path(version.path)) == version.sha256


def test_a_model_whose_chat_template_reaches_for_python_internals_is_rejected_by_its_probe(registry, root):
    """SmolLM2's bytes with its template replaced in place (same length: the file stays valid) by one
    that reaches for Python's internals: the header is fine, the sandbox refuses it in the probe."""
    import struct

    data = bytearray(smollm2_path().read_bytes())
    key = b"tokenizer.chat_template"
    at = data.index(key) + len(key)
    _, length = struct.unpack_from("<IQ", data, at)
    hostile = b"{{ ''.__class__.__mro__[1].__subclasses__() }}"
    data[at + 12 : at + 12 + length] = hostile.ljust(length, b" ")
    path = _write(root / "hostile.gguf", bytes(data))
    version = registry.register_file(path, name="hostile")
    assert (
        version.state == "rejected"
        and "probe failed" in version.reason
        and "__subclasses__" in version.reason
    )
    assert version.probe["loaded"] is False and version.chat_template_sha256 is not None
    with pytest.raises(Conflict, match="never be promoted"):
        registry.move_alias("hostile", "candidate", version.version, actor="test")
