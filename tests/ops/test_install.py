"""install.sh into a temporary root: the layout, the config, the unit (systemd-analyze), upgrades,
rollback of a release that never gets ready, and uninstall.

The dependencies come from the venv running the tests (install.sh --deps-from, a .pth file): the
full offline installation of every wheel is covered by test_bundle_offline.py.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import load_settings
from tests.conftest import REPO, TEST_MODEL_ENV, free_port

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed: the unit cannot be verified",
)


def install(root: Path, *args: str, source: Path = REPO, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        **TEST_MODEL_ENV,
        "APPLIANCE_SERVER__PORT": str(free_port()),
        "INSTALL_READY_TIMEOUT": "180",
    }
    proc = subprocess.run(
        [str(source / "install.sh"), "--root", str(root), "--deps-from", sys.prefix, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def releases(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "opt/appliance/releases").iterdir())


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("root")


def test_dev_install_lays_out_the_whole_tree(root):
    proc = install(root, "--dev", "--no-start")
    current = root / "opt/appliance/current"
    assert current.is_symlink() and (current / "bin/appliance").exists()
    # The appliance is installed into the release (not borrowed from the test venv).
    site = subprocess.run(
        [str(current / "bin/python"), "-c", "import appliance; print(appliance.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    ).stdout
    assert site.startswith(str(root / "opt/appliance/current/lib/"))
    data = root / "var/lib/appliance"
    for sub in ("inbox", "models", "backups"):
        assert (data / sub).is_dir()
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    conf = root / "etc/appliance/appliance.toml"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o640
    settings = load_settings(conf, environ={})
    assert settings.data_path == data and settings.network.guard and settings.server.host == "127.0.0.1"
    assert conf.read_text().count("\n# ") > 50  # every default shown, commented out
    # The command an admin types finds the service's config without flags.
    wrapper = (root / "usr/local/bin/appliance").read_text()
    assert f"APPLIANCE_CONFIG:={conf}" in wrapper
    out = proc.stdout
    assert (
        f"admin key: {data}/admin.key" in out
        and "console:" in out
        and f"{root}/usr/local/bin/appliance console" in out
    )
    assert "--no-start" in out
    # The monitoring files ship with the release, at the paths the installer prints.
    for shipped in ("ops/grafana/appliance.json", "ops/prometheus/alerts.yml"):
        path = root / "opt/appliance/current/share/appliance" / shipped
        assert path.is_file() and str(path) in out, shipped


def test_installed_unit_verifies_cleanly_and_is_hardened(root):
    unit = root / "etc/systemd/system/appliance.service"
    text = unit.read_text()
    assert f"ExecStart={root}/opt/appliance/current/bin/appliance serve" in text
    assert f"ReadWritePaths={root}/var/lib/appliance" in text
    for directive in (
        "Restart=on-failure",
        "User=appliance",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "IPAddressDeny=any",
        "IPAddressAllow=localhost",
        "SystemCallFilter=@system-service",
        "LimitNOFILE=",
        "ExecStartPost=",
    ):
        assert directive in text, directive
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True, text=True
    )
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)[1])
    assert score <= 2.0, security.stdout
    dropin = (root / "etc/systemd/system/appliance.service.d/10-network.conf").read_text()
    assert "[Service]" in dropin and "IPAddressAllow=" not in dropin.replace("# ", "").split("[Service]")[1]


def test_upgrade_keeps_config_and_rolls_back_a_release_that_never_gets_ready(root, tmp_path):
    conf = root / "etc/appliance/appliance.toml"
    conf.write_text(conf.read_text().replace("# size_tokens = 200", "size_tokens = 180"))
    edited = conf.read_text()
    first = releases(root)
    # An upgrade that starts the installed server once, checks /readyz and stops it.
    proc = install(root, "--dev")
    assert "upgrading" in proc.stdout and "kept the existing config" in proc.stdout
    assert conf.read_text() == edited
    good = os.readlink(root / "opt/appliance/current")
    assert len(releases(root)) == 2 and good != f"releases/{first[0]}"
    data = root / "var/lib/appliance"
    assert (data / "appliance.duckdb").exists() and (data / "admin.key").exists()
    key = (data / "admin.key").read_text()

    # A release whose server dies at start: the upgrade must come back to the good one.
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in ("pyproject.toml", "README.md", "install.sh", "appliance", "scripts", "systemd", "etc"):
        src = REPO / item
        (
            shutil.copytree(src, broken / item, ignore=shutil.ignore_patterns("__pycache__"))
            if src.is_dir()
            else shutil.copy2(src, broken / item)
        )
    server_py = broken / "appliance/server.py"
    source, patched = re.subn(
        r"(def serve\(.*?\) -> int:\n)",
        r"\1    raise SystemExit('this release is broken on purpose')\n",
        server_py.read_text(),
        count=1,
        flags=re.S,
    )
    assert patched == 1, "appliance/server.py has no serve() to break"
    server_py.write_text(source)
    proc = install(root, "--dev", source=broken, check=False)
    assert proc.returncode != 0
    assert "ROLLING BACK" in proc.stdout and "rolled back to" in proc.stderr
    assert os.readlink(root / "opt/appliance/current") == good
    backups = list((data / "backups").glob("pre-upgrade-*"))
    assert len(backups) == 1 and (backups[0] / "MANIFEST.json").exists()
    assert (data / "admin.key").read_text() == key  # the restored snapshot's key
    assert list(data.glob("pre-restore-*"))  # what the failed release saw is kept, not deleted


def test_uninstall_keeps_data_unless_purged(root):
    proc = install(root, "--uninstall")
    assert (
        not (root / "opt/appliance").exists() and not (root / "etc/systemd/system/appliance.service").exists()
    )
    assert (root / "etc/appliance/appliance.toml").exists() and (
        root / "var/lib/appliance/appliance.duckdb"
    ).exists()
    assert "Kept:" in proc.stdout
    install(root, "--uninstall", "--purge")
    assert not (root / "etc/appliance").exists() and not (root / "var/lib/appliance").exists()


def test_refuses_unprivileged_install_onto_the_machine():
    if os.geteuid() == 0:
        proc = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                str(REPO / "install.sh"),
                "--dev",
            ],
            capture_output=True,
            text=True,
        )
    else:
        proc = subprocess.run([str(REPO / "install.sh"), "--dev"], capture_output=True, text=True)
    assert proc.returncode != 0 and "needs root" in proc.stderr and "--root DIR" in proc.stderr
