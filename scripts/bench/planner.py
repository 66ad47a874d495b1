"""Capacity planner accuracy: calibrate with SmolLM2, predict the held-out Qwen2.5-Coder-1.5B at three load
levels, measure each with the built-in load generator against a live server, print predicted vs measured.

The server runs in a temp dir with `--models-dir` holding the assembled Qwen file (assembled there once if
missing). Targets (issue 17): single-stream decode tokens/s within 10%; resident memory within 3% or
0.5 GiB; p95 TTFT within 15%; p95 end-to-end within 10%; users meeting a p95 SLO within 1 user or 10%;
measured values inside the predicted 90% interval at least 85% of the time.

    python scripts/bench/planner.py [--quick] [--levels 1,2,3] [--slots 1] [--context 2048]
        [--output-tokens 24] [--prompt-words 80] [--models-dir var/models] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import REPO, bench_server  # noqa: E402

QWEN = "Qwen2.5-Coder-1.5B-Instruct"
GIB = 2**30


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def wait_loaded(api, name: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        chat = api.get("/api/v1/admin/models").json()["chat"]
        if chat["state"] == "loaded" and name.lower() in json.dumps(chat).lower():
            return
        if chat["state"] == "failed":
            raise SystemExit(f"{name} failed to load: {chat}")
        time.sleep(1)
    raise SystemExit(f"{name} did not load in 5 minutes")


def err(pred: float | None, meas: float | None) -> float | None:
    if pred is None or meas in (None, 0):
        return None
    return (pred - meas) / meas


def row(metric: str, level: str, pred, interval, meas, target: float | None, unit: str = "") -> dict:
    e = err(pred, meas)
    inside = None if not interval or meas is None else interval[0] <= meas <= interval[1]
    ok = None if e is None or target is None else abs(e) <= target
    return {
        "metric": metric,
        "level": level,
        "predicted": pred,
        "interval": interval,
        "measured": meas,
        "error": None if e is None else round(e, 3),
        "target": target,
        "meets_target": ok,
        "inside_interval": inside,
        "unit": unit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="quick calibration, fewer requests")
    parser.add_argument("--levels", default="1,2,3", help="concurrent users per level")
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--output-tokens", type=int, default=24)
    parser.add_argument("--prompt-words", type=int, default=80)
    parser.add_argument("--models-dir", default=str(REPO / "var" / "models"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from appliance.models.manifest import assemble_qwen_coder
    from appliance.planner.loadgen import run_load

    models_dir = Path(args.models_dir).absolute()
    assemble_qwen_coder(models_dir)  # a no-op once assembled
    levels = [int(x) for x in args.levels.split(",")]
    env = {
        "APPLIANCE_LLM__MODELS_DIR": str(models_dir),
        "APPLIANCE_LLM__LOAD_AT_START": "false",
        "APPLIANCE_LLM__SLOTS": str(args.slots),
        "APPLIANCE_LLM__CONTEXT_LENGTH": str(args.context),
        "APPLIANCE_LLM__MAX_QUEUE": "64",
    }
    load_start = os.getloadavg()
    rows: list[dict] = []
    with bench_server(env=env) as api:
        url, key = str(api.base_url).rstrip("/"), api.headers["Authorization"].split()[1]
        t = time.monotonic()
        api.post("/api/v1/plan/calibrate", json={"quick": args.quick}).raise_for_status()
        while (status := api.get("/api/v1/plan/calibration/status").json())["state"] == "running":
            time.sleep(2)
        if status["state"] != "done":
            raise SystemExit(f"calibration {status['state']}: {status['error']}")
        cal = api.get("/api/v1/plan/calibration").raise_for_status().json()
        print(
            f"calibrated with {cal['model']} in {time.monotonic() - t:.0f} s: "
            f"{cal['memory_bandwidth'] / 1e9:.1f} GB/s, points {[(p['slots'], p['active'], p['decode_tokens_per_s']) for p in cal['points']]}",
            file=sys.stderr,
        )
        base = rss(api.server_pid)
        api.post("/api/v1/admin/models/load", json={"model": QWEN}).raise_for_status()
        wait_loaded(api, QWEN)
        warm = api.post(
            "/v1/chat/completions",
            json={
                "model": QWEN,
                "max_tokens": 4,
                "temperature": 0,
                "messages": [
                    {
                        "role": "user",
                        "content": __import__("appliance.planner.loadgen", fromlist=["prompt"]).prompt(
                            999, args.prompt_words
                        ),
                    }
                ],
            },
        )
        prompt_tokens = warm.raise_for_status().json()["usage"]["prompt_tokens"]
        model_rss = rss(api.server_pid) - base
        predictions, measurements = {}, {}
        for users in levels:
            body = {
                "model": QWEN,
                "slots": args.slots,
                "context": args.context,
                "users": users,
                "prompt_tokens": prompt_tokens,
                "output_tokens": args.output_tokens,
            }
            pred = api.post("/api/v1/plan/predict", json=body).raise_for_status().json()
            requests = (1 if args.quick else 2) * users + 2
            meas = run_load(
                url,
                key,
                QWEN,
                users,
                requests,
                max_seconds=600,
                prompt_words=args.prompt_words,
                output_tokens=args.output_tokens,
            ).summary()
            predictions[users], measurements[users] = pred, meas
            print(f"users={users}: measured {meas}", file=sys.stderr)
            lvl = f"users={users}"
            for metric, target in (("ttft_ms", 0.15), ("e2e_ms", 0.10)):
                p, m = pred[metric], meas[metric]
                rows.append(
                    row(f"p95 {metric[:-3]}", lvl, p["p95"], p["interval"], m and m["p95"], target, "ms")
                )
            rows.append(
                row(
                    "tokens/s per user",
                    lvl,
                    pred["tokens_per_s_per_user"],
                    pred["tokens_per_s_per_user_interval"],
                    meas["tokens_per_s_per_user"],
                    None,
                    "tok/s",
                )
            )
            rows.append(
                row(
                    "throughput",
                    lvl,
                    pred["throughput_rps"],
                    pred["throughput_rps_interval"],
                    meas["throughput_rps"],
                    None,
                    "req/s",
                )
            )
        one = predictions[levels[0]]
        rows.insert(
            0,
            row(
                "single-stream decode",
                f"users={levels[0]}",
                one["single_stream_tokens_per_s"],
                one["tokens_per_s_per_user_interval"],
                measurements[levels[0]]["tokens_per_s_per_user"],
                0.10,
                "tok/s",
            ),
        )
        rows.insert(
            1,
            row(
                "resident memory",
                "model",
                round(one["memory_bytes"] / GIB, 3),
                None,
                round(model_rss / GIB, 3),
                None,
                "GiB",
            ),
        )
        rows[1]["meets_target"] = abs(one["memory_bytes"] - model_rss) <= max(0.03 * model_rss, 0.5 * GIB)
        # Users meeting an SLO: p95 end-to-end within 2.5x one user's measured p95.
        slo = 2.5 * measurements[levels[0]]["e2e_ms"]["p95"]
        measured_users = max((u for u in levels if measurements[u]["e2e_ms"]["p95"] <= slo), default=0)
        predicted_users = 0
        for users in range(1, max(levels) * 2 + 1):
            body = {
                "model": QWEN,
                "slots": args.slots,
                "context": args.context,
                "users": users,
                "prompt_tokens": prompt_tokens,
                "output_tokens": args.output_tokens,
            }
            if api.post("/api/v1/plan/predict", json=body).json()["e2e_ms"]["p95"] <= slo:
                predicted_users = users
        users_row = row(
            f"users meeting p95 e2e <= {slo:.0f} ms",
            f"levels {levels}",
            predicted_users,
            None,
            measured_users,
            None,
            "users",
        )
        users_row["meets_target"] = abs(predicted_users - measured_users) <= max(1, 0.1 * measured_users)
        rows.append(users_row)
    inside = [r["inside_interval"] for r in rows if r["inside_interval"] is not None]
    report = {
        "machine": f"{os.cpu_count()} cores shared with other agents; load average {load_start[0]:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end",
        "calibration": {
            k: cal[k]
            for k in (
                "id",
                "model",
                "quick",
                "seconds",
                "memory_bandwidth",
                "matmul_flops",
                "residual_cv",
                "points",
            )
        },
        "held_out_model": QWEN,
        "slots": args.slots,
        "context": args.context,
        "prompt_tokens": prompt_tokens,
        "output_tokens": args.output_tokens,
        "rows": rows,
        "inside_interval": f"{sum(inside)}/{len(inside)}",
        "extrapolated": one["extrapolation"],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"\n{report['machine']}")
    c = report["calibration"]
    points = ", ".join(
        f"({p['slots']}, {p['active']}, {p['prefill_tokens_per_s']:.0f}, {p['decode_tokens_per_s']:.1f})"
        for p in c["points"]
    )
    print(
        f"calibration ({c['seconds']} s): {c['memory_bandwidth'] / 1e9:.1f} GB/s, {c['matmul_flops'] / 1e9:.0f} GFLOP/s,"
        f" spread {c['residual_cv']:.1%}; SmolLM2 (slots, active, prefill tok/s, decode tok/s): {points}"
    )
    print(
        f"held out {QWEN}: slots={args.slots} context={args.context} prompt={prompt_tokens} output={args.output_tokens}"
    )
    print(
        f"{'metric':<34}{'level':<12}{'predicted':>11}{'90% interval':>22}{'measured':>11}{'error':>9}  target"
    )
    for r in rows:
        iv = f"[{r['interval'][0]:.4g}, {r['interval'][1]:.4g}]" if r["interval"] else ""
        e = f"{r['error']:+.0%}" if r["error"] is not None else ""
        verdict = {True: "meets", False: "MISSES", None: ""}[r["meets_target"]]
        tgt = f"±{r['target']:.0%} {verdict}" if r["target"] else verdict
        print(
            f"{r['metric']:<34}{r['level']:<12}{r['predicted']!s:>11}{iv:>22}{r['measured']!s:>11}{e:>9}  {tgt}"
        )
    print(f"measured inside the predicted 90% interval: {report['inside_interval']} (target >= 85%)")
    print("extrapolated: " + "; ".join(report["extrapolated"]))


if __name__ == "__main__":
    main()
