"""Runs inside a network namespace with only loopback: install a bundle, serve, ingest, search, ask.
Prints one JSON object for test_bundle_offline.py (not a test module itself)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

bundle, root, repo = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
out: dict = {}
try:
    socket.create_connection(("151.101.0.223", 443), timeout=3).close()  # pypi.org's CDN
    out["registry_reachable"] = True
except OSError:
    out["registry_reachable"] = False
env = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": str(root),
    "PIP_NO_INDEX": "1",
    "APPLIANCE_LLM__MODEL": "SmolLM2-135M-Instruct",
    "APPLIANCE_LLM__CONTEXT_LENGTH": "2048",
}
t = time.monotonic()
inst = subprocess.run(
    [str(repo / "install.sh"), "--bundle", str(bundle), "--root", str(root), "--no-start"],
    capture_output=True,
    text=True,
    env=env,
)
out.update(
    install_rc=inst.returncode,
    install_out=inst.stdout[-3000:] + inst.stderr[-3000:],
    install_s=round(time.monotonic() - t, 1),
)
if inst.returncode == 0:
    cmd = root / "usr/local/bin/appliance"
    log = open(root / "server.log", "wb")
    server = subprocess.Popen([str(cmd), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        conf = root / "etc/appliance/appliance.toml"
        ready = subprocess.run(
            [
                str(root / "opt/appliance/current/bin/python"),
                "-m",
                "appliance.ops.install_support",
                "wait-ready",
                "--config",
                str(conf),
                "--timeout",
                "240",
            ],
            env=env,
            capture_output=True,
            text=True,
            cwd=root,
        )
        out["ready"] = ready.returncode == 0
        docs = root / "docs"
        docs.mkdir()
        (docs / "travel.md").write_text("# Travel policy\n\nThe per diem in Europe is 60 euros a day.\n")
        (docs / "keys.md").write_text("# Key rotation\n\nRotate API keys every 90 days with the console.\n")

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [str(cmd), *args], env=env, capture_output=True, text=True, cwd=root, timeout=300
            )

        ing = run("ingest", str(docs), "--collection", "docs", "--wait", "--json")
        out["ingest"] = json.loads(ing.stdout) if ing.returncode == 0 else ing.stderr
        srch = run("search", "per diem Europe", "--collection", "docs", "--json")
        out["search_titles"] = (
            [h["title"] for h in json.loads(srch.stdout)["hits"]] if srch.returncode == 0 else srch.stderr
        )
        ask = run("ask", "What is the per diem in Europe?", "--collection", "docs", "--json")
        out["ask"] = json.loads(ask.stdout) if ask.returncode == 0 else ask.stderr
        key = (root / "var/lib/appliance/admin.key").read_text().strip()
        ops = httpx.get(
            "http://127.0.0.1:8080/api/v1/admin/ops", headers={"Authorization": f"Bearer {key}"}
        ).json()
        out["network"] = ops["network"]
        metrics = httpx.get("http://127.0.0.1:8080/metrics", headers={"Authorization": f"Bearer {key}"}).text
        out["metric"] = [ln for ln in metrics.splitlines() if ln.startswith("network_outbound_blocked_total")]
        doctor = run("doctor", "--json")
        out["doctor"] = json.loads(doctor.stdout) if doctor.stdout.startswith("[") else doctor.stderr
    finally:
        server.terminate()
        server.wait(60)
        log.close()
        out["server_log_tail"] = (root / "server.log").read_text(errors="replace")[-2000:]
print(json.dumps(out))
