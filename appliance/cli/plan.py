"""`appliance plan calibrate|predict|recommend|render|apply|rollback|validate|chat|gpus`: the capacity
planner, through the API."""

from __future__ import annotations

import argparse
import json
import sys

from appliance.cli.common import Parents, connect, emit, endpoint

PRIORITIES = ("latency", "cost", "accuracy")
TASKS = ("chat", "rag", "summarisation", "code")


def _load_flags(p: argparse.ArgumentParser) -> None:
    load = p.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, help="requests per second (open loop)")
    load.add_argument("--users", type=int, help="concurrent users (closed loop)")
    p.add_argument("--think-s", type=float, default=0.0, help="users' pause between requests (default 0)")
    p.add_argument("--task", choices=TASKS, default="chat")
    p.add_argument("--prompt-tokens", type=int)
    p.add_argument("--output-tokens", type=int)


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser(
        "plan", parents=[parents.client], help="capacity planning: calibrate, predict, recommend"
    )
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("calibrate", parents=[parents.client], help="measure this box (about 5 minutes)")
    a.add_argument("--quick", action="store_true", help="a rough calibration in seconds")
    a.add_argument("--model", help="the reference model (default SmolLM2-135M-Instruct)")
    a.set_defaults(func=_calibrate)
    a = actions.add_parser("calibration", parents=[parents.client], help="the latest calibration of this box")
    a.set_defaults(func=_calibration)
    a = actions.add_parser(
        "predict", parents=[parents.client], help="latency, throughput and memory of a configuration"
    )
    a.add_argument("--model", required=True)
    a.add_argument("--target", default="cpu", help="cpu (this box) or a GPU of `appliance plan gpus`")
    a.add_argument("--slots", type=int, default=1)
    a.add_argument("--context", type=int, default=4096)
    a.add_argument("--threads", type=int, default=0)
    a.add_argument(
        "--no-refit",
        action="store_true",
        help="the calibration as measured, without the validations' factors",
    )
    _load_flags(a)
    a.set_defaults(func=_predict)
    a = actions.add_parser("recommend", parents=[parents.client], help="ranked configurations for a workload")
    _load_flags(a)
    a.add_argument("--priority", choices=PRIORITIES, default="latency")
    a.add_argument("--p95-ttft-ms", type=float)
    a.add_argument("--tokens-per-s-per-user", type=float)
    a.add_argument("--budget-usd-month", type=float)
    a.add_argument("--memory-gib", type=float, help="memory limit for the model")
    a.add_argument("--top", type=int, default=10)
    a.add_argument("--no-gpus", action="store_true", help="this box only")
    a.set_defaults(func=_recommend)
    a = actions.add_parser(
        "render", parents=[parents.client], help="a recommended configuration as settings or YAML"
    )
    a.add_argument("config_id")
    a.set_defaults(func=_render)
    a = actions.add_parser(
        "validate",
        parents=[parents.client],
        help="load-test the server (loopback only): predicted vs measured",
    )
    a.add_argument("--users", type=int, default=1, help="concurrent users, closed loop (default 1)")
    a.add_argument("--requests", type=int, default=10, help="stop after this many answers (default 10)")
    a.add_argument("--duration", type=float, default=300, help="stop after this many seconds (default 300)")
    a.add_argument("--prompt-words", type=int, default=80)
    a.add_argument("--output-tokens", type=int, default=24)
    a.add_argument(
        "--p95-ttft-ms",
        type=float,
        help="an SLO to judge (p95 time to first token; default: the applied plan's promise)",
    )
    a.add_argument(
        "--auto-rollback",
        action="store_true",
        help="roll the applied plan back if a promised SLO is missed by more than its interval",
    )
    a.set_defaults(func=_validate)
    a = actions.add_parser(
        "refit", parents=[parents.client], help="the validations' correction factors in force, per model"
    )
    undo = a.add_mutually_exclusive_group()
    undo.add_argument("--drop", metavar="VALIDATION_ID", help="undo what one validation taught")
    undo.add_argument("--restore", metavar="VALIDATION_ID", help="count a dropped validation again")
    a.set_defaults(func=_refit)
    a = actions.add_parser("gpus", parents=[parents.client], help="the GPU catalogue (not calibrated)")
    a.set_defaults(func=_gpus)
    a = actions.add_parser(
        "apply",
        parents=[parents.client],
        help="serve a recommended CPU configuration: default alias, llm settings, reload, health check",
    )
    a.add_argument("config_id", nargs="?", help="an id of `appliance plan recommend`")
    a.add_argument("--rollback", action="store_true", help="instead: undo the newest apply in force")
    a.add_argument("--wait", type=float, default=300, help="seconds for the reload's health check")
    a.set_defaults(func=_apply)
    a = actions.add_parser(
        "rollback", parents=[parents.client], help="undo the newest apply: previous alias and settings"
    )
    a.set_defaults(func=_rollback)
    a = actions.add_parser("applies", parents=[parents.client], help="every apply, newest first")
    a.set_defaults(func=_applies)
    a = actions.add_parser(
        "validations", parents=[parents.client], help="validation runs: predicted vs measured"
    )
    a.set_defaults(func=_validations)
    a = actions.add_parser(
        "chat",
        parents=[parents.client],
        help="describe the deployment in words: the local model reads the intent and asks for what is missing",
    )
    a.add_argument(
        "--say",
        action="append",
        default=[],
        metavar="TEXT",
        help="a turn of yours, given in advance (repeatable; then stdin)",
    )
    a.add_argument("--recommend", action="store_true", help="once complete, rank configurations for it")
    a.set_defaults(func=_chat)


def _load(args: argparse.Namespace) -> dict:
    return {
        "task": args.task,
        "rate": args.rate,
        "users": args.users,
        "think_s": args.think_s,
        "prompt_tokens": args.prompt_tokens,
        "output_tokens": args.output_tokens,
    }


def _calibration(args: argparse.Namespace) -> int:
    return _show_calibration(args, connect(args).plan_calibration())


def _calibrate(args: argparse.Namespace) -> int:
    import time

    client = connect(args)
    client.plan_calibrate(quick=args.quick, model=args.model)
    shown = None
    while (status := client.plan_calibration_status())["state"] == "running":
        if status["step"] != shown and not args.json:
            print(f"  {status['step']}", file=sys.stderr)
            shown = status["step"]
        time.sleep(1)
    if status["state"] != "done":
        print(f"error: calibration {status['state']}: {status['error']}", file=sys.stderr)
        return 1
    return _show_calibration(args, client.plan_calibration())


def _show_calibration(args: argparse.Namespace, cal: dict) -> int:

    def human(c: dict) -> None:
        print(
            f"calibration {c['id']} ({c['seconds']} s) on {c['hardware']['cpu_model']}, {c['hardware']['cores']} cores"
        )
        print(
            f"  memory bandwidth {c['memory_bandwidth'] / 1e9:.1f} GB/s   matrix {c['matmul_flops'] / 1e9:.0f} GFLOP/s"
        )
        for p in c["points"]:
            print(
                f"  {c['model']} slots={p['slots']} active={p['active']}: prefill {p['prefill_tokens_per_s']:.0f} tok/s,"
                f" decode {p['decode_tokens_per_s']:.1f} tok/s per request"
            )
        print(f"  overheads (ms): {c['overheads_ms']}   spread {c['residual_cv']:.1%}")

    emit(args, cal, human)
    return 0


def _ms(m: dict) -> str:
    lo, hi = m["interval"] or (None, None)
    return f"p50 {m['p50']:.0f}  p95 {m['p95']:.0f} [{lo:.0f}, {hi:.0f}]  p99 {m['p99']:.0f} ms"


def _predict(args: argparse.Namespace) -> int:
    if args.rate is None and args.users is None:
        args.users = 1
    result = connect(args).plan_predict(
        model=args.model,
        target=args.target,
        slots=args.slots,
        context=args.context,
        threads=args.threads,
        refit=not args.no_refit,
        **_load(args),
    )

    def human(r: dict) -> None:
        print(f"{r['config']['id']}  ({'calibrated' if r['calibrated'] else 'NOT calibrated'})")
        print(f"  calibration {r['calibration_id']}, " + _refit_line(r["refit"]))
        print(f"  TTFT   {_ms(r['ttft_ms'])}")
        print(f"  e2e    {_ms(r['e2e_ms'])}")
        print(f"  tokens/s per user {r['tokens_per_s_per_user']}   throughput {r['throughput_rps']} req/s")
        print(
            f"  utilisation {r['utilisation']:.2f}   memory {r['memory_bytes'] / 2**30:.2f} GiB   ${r['cost_usd_month']}/month"
        )
        print(f"  bound: {r['binding_constraint']}; {r['kv_budget']}")
        if r["extrapolated"]:
            print("  extrapolated: " + "; ".join(r["extrapolation"]))
        for a in r["assumed"]:
            print(f"  assumed {a}")

    emit(args, result, human)
    return 0


def _refit_line(refit: dict | None) -> str:
    if refit is None:
        return "no refit (no validation of this model on this calibration)"
    return (
        f"refit x{refit['prefill_factor']:.3g} prefill, x{refit['decode_factor']:.3g} decode"
        f" from {len(refit['validations'])} validation(s)"
    )


def _refit(args: argparse.Namespace) -> int:
    client = connect(args)
    if args.drop or args.restore:
        client.plan_drop_refit(args.drop or args.restore, dropped=bool(args.drop))
    refits = client.plan_refits()

    def human(rows: list) -> None:
        if not rows:
            print("no refit in force: predictions use the calibration as measured")
        for r in rows:
            print(f"{r['model']} (calibration {r['calibration_id']}): {_refit_line(r)}")
            print(f"  validations {', '.join(r['validations'])}")
        if rows:
            print(f"rule: {rows[0]['rule']}")

    emit(args, refits, human)
    return 0


def _recommend(args: argparse.Namespace) -> int:
    if args.rate is None and args.users is None:
        args.users = 1
    rec = connect(args).plan_recommend(
        **_load(args),
        priority=args.priority,
        p95_ttft_ms=args.p95_ttft_ms,
        tokens_per_s_per_user=args.tokens_per_s_per_user,
        budget_usd_month=args.budget_usd_month,
        memory_bytes=int(args.memory_gib * 2**30) if args.memory_gib else None,
        top=args.top,
        gpus=not args.no_gpus,
    )

    def human(r: dict) -> None:
        print(
            f"recommendation {r['id']}: {r['feasible']} of {r['configurations']} configurations meet the constraints"
            f" (swept in {r['sweep_seconds']} s)"
        )
        for a in r["assumed"]:
            print(f"  assumed {a}")
        for c in r["candidates"]:
            mark = " " if c["feasible"] else "x"
            print(
                f"{c['rank']:>3} {mark} {c['id']:<52} p95 TTFT {c['ttft_p95_ms']} ms  e2e {c['e2e_p95_ms']} ms"
                f"  ${c['cost_usd_month']}/mo  {c['binding_constraint']}"
            )
            if not c["feasible"]:
                print(f"        {c['reason']}")

    emit(args, rec, human)
    return 0


def _render(args: argparse.Namespace) -> int:
    out = connect(args).plan_render(args.config_id)

    def human(r: dict) -> None:
        if r["target"] == "cpu":
            for k, v in r["settings"].items():
                print(f"{k} = {v!r}")
        else:
            print("# vLLM: vllm serve " + " ".join(r["vllm_args"]))
            print(r["kserve_yaml"])

    emit(args, out, human)
    return 0


def _gpus(args: argparse.Namespace) -> int:
    def human(gpus: list) -> None:
        for g in gpus:
            print(
                f"{g['name']:<16} {g['memory_bytes'] / 1e9:.0f} GB  {g['bandwidth'] / 1e9:.0f} GB/s"
                f"  {g['flops'] / 1e12:.0f} TFLOP/s  ${g['usd_per_hour']}/h  (not calibrated)"
            )

    emit(args, connect(args).plan_gpus(), human)
    return 0


def _show_apply(args: argparse.Namespace, record: dict) -> int:
    def human(r: dict) -> None:
        b, a = r["before"], r["after"]
        if r["state"] != "applied":  # rolled back (or failed and restored): the way back is shown
            b, a = a, b
        print(f"{r['state']} {r['config_id']} (apply {r['id']}, {r['created_at']})")
        print(
            f"  default  {b['default_model']}@{b['default_version']} -> {a['default_model']}@{a['default_version']}"
        )
        for key in ("slots", "context_length", "threads"):
            print(f"  llm.{key:<15} {b[key]} -> {a[key]}")
        print(f"  chat model {r['health']}" + (f": {r['health_error']}" if r["health_error"] else ""))
        for note in r["notes"] if r["state"] == "applied" else []:
            print(f"  note: {note}")

    emit(args, record, human)
    return 0 if record["health"] in ("loaded", "unloaded") else 2


def _apply(args: argparse.Namespace) -> int:
    if args.rollback:
        return _show_apply(args, connect(args).plan_rollback())
    if not args.config_id:
        print("error: give a CONFIG_ID of `appliance plan recommend`, or --rollback", file=sys.stderr)
        return 1
    return _show_apply(args, connect(args).plan_apply(args.config_id, wait_s=args.wait))


def _rollback(args: argparse.Namespace) -> int:
    return _show_apply(args, connect(args).plan_rollback())


def _applies(args: argparse.Namespace) -> int:
    def human(records: list) -> None:
        for r in records:
            a = r["after"]
            print(
                f"{r['created_at'][:19]}  {r['id']}  {r['state']:<11} {r['config_id']}"
                f"  ({a['default_model']}, slots {a['slots']}, context {a['context_length']})"
            )

    emit(args, connect(args).plan_applies(), human)
    return 0


def _validations(args: argparse.Namespace) -> int:
    def human(records: list) -> None:
        for v in records:
            print(f"{v['created_at'][:19]}  {v['config_id']}  users {v['users']}, {v['requests']} requests")
            for row in v["rows"]:
                err = f"{row['error']:+.0%}" if row["error"] is not None else "?"
                print(
                    f"    {row['metric']:<10} predicted {row['predicted']:>9.0f}  measured {row['measured']:>9.0f}  {err}"
                )
            _print_outcome(v)

    emit(args, connect(args).plan_validations(), human)
    return 0


OPENING = (
    "Describe the deployment: what it is for, how many users at once (or requests per second), "
    "how long prompts and answers are, and any latency limit."
)
INTENT_FIELDS = (
    "task",
    "users",
    "rate",
    "prompt_tokens",
    "output_tokens",
    "p95_ttft_ms",
    "tokens_per_s_per_user",
    "budget_usd_month",
    "priority",
)


def _chat(args: argparse.Namespace) -> int:
    """Turns from --say, then stdin; the server's model reads each state of the conversation. Ends
    once the intent is complete and the optional numbers were asked for once, or at end of input."""
    client = connect(args)
    scripted = list(args.say)
    out = sys.stderr if args.json else sys.stdout
    messages: list[dict[str, str]] = []
    question: str | None = OPENING
    draft: dict | None = None
    asked_optional = False
    while question is not None:
        if scripted:
            text = scripted.pop(0)
        else:
            print(question, file=out, flush=True)
            try:
                text = input("> " if sys.stdin.isatty() else "")
            except EOFError:
                break
            if not text.strip() and draft is not None and draft["complete"]:
                break  # nothing to add: the task's defaults stand for what is still optional
        messages.append({"role": "user", "content": text})
        draft = client.plan_intent(messages)
        for why in draft["dropped"]:
            print(f"  (not kept: {why})", file=out)
        if draft["complete"] and (not draft["optional_missing"] or asked_optional):
            break
        asked_optional = asked_optional or draft["complete"]
        question = draft["question"]
        messages.append({"role": "assistant", "content": question})
    if draft is None or not draft["complete"]:
        still = draft["missing"] if draft else ["everything"]
        print(f"error: the intent is still missing {', '.join(still)}: nothing was guessed", file=sys.stderr)
        if args.json:
            print(json.dumps({"intent": draft, "messages": messages, "recommendation": None}, indent=2))
        return 1
    result: dict = {"intent": draft, "messages": messages, "recommendation": None}
    if args.recommend:
        fields = {k: draft[k] for k in INTENT_FIELDS if draft[k] is not None}
        result["recommendation"] = client.plan_recommend(**fields)

    def human(r: dict) -> None:
        d = r["intent"]
        print("intent: " + ", ".join(f"{k}={d[k]}" for k in INTENT_FIELDS if d[k] is not None))
        if d["optional_missing"]:
            print("  the task's defaults for: " + ", ".join(d["optional_missing"]))
        if r["recommendation"]:
            for c in r["recommendation"]["candidates"][:5]:
                print(f"{c['rank']:>3} {c['id']}  p95 TTFT {c['ttft_p95_ms']} ms  ${c['cost_usd_month']}/mo")

    emit(args, result, human)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from openai import OpenAI

    from appliance.planner.loadgen import check_loopback, prompt, run_load

    client = connect(args)
    check_loopback(client.url)
    chat = client.models()["chat"]
    if chat.get("state") != "loaded":
        print(f"error: the chat model is {chat.get('state')}: load one first", file=sys.stderr)
        return 1
    _, key = endpoint(args)
    sdk = OpenAI(base_url=client.url.rstrip("/") + "/v1", api_key=key, max_retries=0, timeout=600)
    usage = sdk.chat.completions.create(
        model=chat["name"],
        messages=[{"role": "user", "content": prompt(0, args.prompt_words)}],
        max_tokens=2,
        temperature=0,
    ).usage
    config = {
        "model": chat["name"],
        "slots": chat.get("capacity", 1),
        "context": chat.get("context_length", 4096),
        "threads": chat.get("threads", 0),
        "users": args.users,
        "prompt_tokens": usage.prompt_tokens,
        "output_tokens": args.output_tokens,
    }
    predicted = client.plan_predict(**config)  # what the planner predicts now, its refit included
    # The same without any refit: the refit learns measured / this, so its factors never compound.
    raw = client.plan_predict(**config, refit=False) if predicted["refit"] else predicted
    measured = run_load(
        client.url,
        key,
        chat["name"],
        args.users,
        args.requests,
        args.duration,
        args.prompt_words,
        args.output_tokens,
    ).summary()
    rows = []
    for metric in ("ttft_ms", "e2e_ms", "itl_ms"):
        p, m = predicted[metric], measured[metric]
        if m is None:
            continue
        rows.append(_row(f"p95 {metric[:-3]}", p["p95"], p["interval"], m["p95"], raw[metric]["p95"]))
    if measured["tokens_per_s_per_user"] and predicted["tokens_per_s_per_user"]:
        rows.append(
            _row(
                "tokens/s per user",
                predicted["tokens_per_s_per_user"],
                predicted["tokens_per_s_per_user_interval"],
                measured["tokens_per_s_per_user"],
                raw["tokens_per_s_per_user"],
            )
        )
    slo = None
    if args.p95_ttft_ms is not None and measured["ttft_ms"]:
        slo = {
            "p95_ttft_ms": args.p95_ttft_ms,
            "predicted_met": predicted["ttft_ms"]["p95"] <= args.p95_ttft_ms,
            "measured_met": measured["ttft_ms"]["p95"] <= args.p95_ttft_ms,
        }
    stored = client.plan_record_validation(
        {
            "config_id": predicted["config"]["id"],
            "users": args.users,
            "requests": measured["requests"],
            "errors": sum(measured["errors"].values()),
            "rows": rows,
            "slo_p95_ttft_ms": slo["p95_ttft_ms"] if slo else None,
            "slo_predicted_met": slo["predicted_met"] if slo else None,
            "slo_measured_met": slo["measured_met"] if slo else None,
            "model": chat["name"],
            "slots": config["slots"],
            "context": config["context"],
            "calibration_id": predicted["calibration_id"],
            "auto_rollback": args.auto_rollback,
        }
    )
    out = {
        "id": stored["id"],
        "config": predicted["config"],
        "rows": rows,
        "slo": slo,
        "verdicts": stored["verdicts"],
        "refit_used": predicted["refit"],
        "refit": stored["refit"],
        "rollback": stored["rollback"],
        "predicted": predicted,
        "measured": measured,
    }

    def human(r: dict) -> None:
        print(
            f"{r['config']['id']}: {r['measured']['requests']} requests, errors {r['measured']['errors'] or 'none'}"
        )
        print(f"  predicted with {_refit_line(r['refit_used'])}")
        for row in r["rows"]:
            err = f"{row['error']:+.0%}" if row["error"] is not None else "?"
            inside = "inside" if row["inside_interval"] else "OUTSIDE"
            print(
                f"  {row['metric']:<17} predicted {row['predicted']:>10.1f}  measured {row['measured']:>10.1f}  {err:>6}  {inside}"
            )
        _print_outcome(r)

    emit(args, out, human)
    return 0 if all(v["verdict"] == "met" for v in stored["verdicts"]) else 2


def _row(metric: str, predicted: float, interval: list | None, measured: float, raw: float) -> dict:
    lo, hi = interval or (None, None)
    return {
        "metric": metric,
        "predicted": predicted,
        "interval": interval,
        "measured": measured,
        "error": round((predicted - measured) / measured, 3) if measured else None,
        "inside_interval": lo is not None and lo <= measured <= hi,
        "raw_predicted": raw,
    }


def _print_outcome(v: dict) -> None:
    """A validation's SLO verdicts, what it taught the refit, and the rollback offered or done."""
    for verdict in v["verdicts"]:
        print(
            f"  SLO {verdict['slo']} {'>=' if verdict['slo'] == 'tokens/s per user' else '<='} "
            f"{verdict['promised']:g} ({verdict['source']}): measured {verdict['measured']:g}, "
            f"{verdict['verdict'].upper()} (interval margin {verdict['margin']:g})"
        )
    refit = v["refit"]
    if refit and refit["factors_after"]:
        f = refit["factors_after"]
        state = " (dropped)" if refit["dropped"] else ""
        print(
            f"  refit{state}: measured/predicted prefill {refit['prefill_ratio']}, decode {refit['decode_ratio']}"
            f" (weight {refit['weight']}) -> {f['model']} now x{f['prefill_factor']:.3g} prefill,"
            f" x{f['decode_factor']:.3g} decode"
        )
    rb = v["rollback"]
    if rb is None:
        return
    if rb["state"] == "offered":
        print(f"  a promised SLO was missed beyond its interval: roll {rb['config_id']} back with")
        print(f"    {rb['command']}")
    elif rb["state"] == "done":
        print(f"  rolled back {rb['config_id']} (apply {rb['apply_id']}): chat model {rb['health']}")
    else:
        print(f"  rollback {rb['state']}: {rb['detail']}")
