"""`appliance tune`: fine-tuning jobs on a collection's own text (the embedder for now)."""

from __future__ import annotations

import argparse
import re
import sys
import time

from appliance.cli.common import Parents, connect, emit

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?")


def parse_duration(text: str) -> float:
    """`90`, `90s`, `30m`, `1h30m` -> seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 30m, 1h30m or 900s")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser("tune", parents=[parents.client], help="fine-tune models on a collection's own text")
    actions = p.add_subparsers(dest="tune_command", required=True, metavar="COMMAND")
    a = actions.add_parser(
        "embedder",
        parents=[parents.client],
        help="fine-tune the embedder on a collection; the result is a new embedding version in the registry",
    )
    a.add_argument("--collection", "-c", required=True)
    a.add_argument("--budget", type=parse_duration, default=1800.0, help="training time (default 30m)")
    a.add_argument("--max-steps", type=int, default=2000)
    a.add_argument("--batch-size", type=int, default=32)
    a.add_argument("--questions", type=int, default=0, help="generated questions to train on (chat model)")
    a.add_argument("--threads", type=int, default=1, help="torch threads of the training (default 1)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--name", help="registry family (default: all-MiniLM-L6-v2-<collection>)")
    a.add_argument(
        "--rollout",
        action="store_true",
        help="then switch the collection to the tuned version if its retrieval gate passes (a reembed job)",
    )
    a.add_argument(
        "--rollout-min-gain", type=float, default=0.0, help="the gate's nDCG@10 margin (default 0)"
    )
    a.add_argument("--wait", action="store_true", help="follow the job until it ends")
    a.set_defaults(func=_embedder)


def _embedder(args: argparse.Namespace) -> int:
    client = connect(args)
    job = client.tune_embedder(
        args.collection,
        args.budget,
        args.max_steps,
        args.batch_size,
        args.questions,
        args.threads,
        args.seed,
        args.name,
        args.rollout,
        args.rollout_min_gain,
    )
    if not args.wait:
        emit(args, job, lambda j: print(f"tuning: job {j['id']} (appliance jobs {j['id']})"))
        return 0
    last = None
    while job["state"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(1.0)
        job = client.job(job["id"])
        phase = (job.get("summary") or {}).get("phase")
        line = f"{phase or job['state']}: step {job['progress']['processed']}/{job['progress']['total']}"
        if line != last and not args.json and sys.stderr.isatty():
            print(line, file=sys.stderr)
            last = line

    def human(j: dict) -> None:
        if j["state"] != "succeeded":
            print(f"tuning {j['state']}: {j.get('error') or ''}")
            return
        s = j["summary"]
        before, after = s["held_out_before"], s["held_out_after"]
        print(
            f"{s['model']['name']} version {s['model']['version']}: held-out nDCG@10 {before['ndcg@10']:.4f} -> "
            f"{after['ndcg@10']:.4f} on {after['queries']} queries; {s['training']['steps']} steps in "
            f"{s['training']['seconds']:.0f} s; pairs {s['data']['train']}"
        )
        if s.get("rollout"):
            r = s["rollout"]
            print(
                f"rollout: job {r['job']} (appliance jobs {r['job']})"
                if r["job"]
                else f"rollout refused: {r['error']}"
            )

    emit(args, job, human)
    return 0 if job["state"] == "succeeded" else 1
