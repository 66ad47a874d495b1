"""`appliance search` and `appliance ask`: ranked hits, and cited answers that stream to the terminal."""

from __future__ import annotations

import argparse

from appliance.cli.common import Parents, connect, emit


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser("search", parents=[parents.client], help="search the knowledge base")
    p.add_argument("query")
    p.add_argument("--collection", "-c")
    p.add_argument("--mode", choices=["keyword", "semantic", "hybrid"])
    p.add_argument("--top-k", "-k", type=int, default=10)
    p.add_argument("--no-cache", action="store_true", help="bypass the retrieval cache")
    p.set_defaults(func=_search)

    p = sub.add_parser(
        "ask", parents=[parents.client], help="ask a question; the answer streams with citations"
    )
    p.add_argument("question")
    p.add_argument("--collection", "-c")
    p.add_argument("--top-k", "-k", type=int)
    p.add_argument("--model")
    p.add_argument("--no-cache", action="store_true", help="bypass the retrieval and answer caches")
    p.set_defaults(func=_ask)


def _where(source_id: str, location: dict) -> str:
    """ "(handbook.md; page=3, heading_path=Travel/Per diems)"."""
    where = ", ".join(f"{k}={'/'.join(v) if isinstance(v, list) else v}" for k, v in location.items())
    return f"({source_id}{'; ' + where if where else ''})"


def _search(args: argparse.Namespace) -> int:
    result = connect(args).search(
        args.query, [args.collection] if args.collection else None, args.top_k, args.mode, not args.no_cache
    )

    def human(res: dict) -> None:
        if not res["hits"]:
            print("no results")
        for rank, hit in enumerate(res["hits"], start=1):
            print(
                f"{rank:>2}. [{hit['score']:.3f}] {hit['title']}  {_where(hit['source_id'], hit['location'])}"
            )
            snippet = " ".join(hit["text"].split())
            print(f"    {snippet[:200]}{'…' if len(snippet) > 200 else ''}")
        cached = ", cached" if res.get("cached") else ""
        print(f"({res['mode']}, {res['timings'].get('total_ms', 0):.0f} ms{cached})")

    emit(args, result, human)
    return 0


def _ask(args: argparse.Namespace) -> int:
    from appliance.client import ApiError

    final: dict = {}
    for event in connect(args).ask(
        args.question,
        [args.collection] if args.collection else None,
        args.top_k,
        args.model,
        not args.no_cache,
    ):
        if event["type"] == "token" and not args.json:
            print(event["text"], end="", flush=True)
        elif event["type"] == "answer":
            final = event
        elif event["type"] == "error":
            if not args.json:
                print()
            raise ApiError.from_event(event, "Answer failed")

    def human(answer: dict) -> None:
        print()
        if answer.get("invalid_citations"):
            print(f"(removed citations to sources that were not given: {answer['invalid_citations']})")
        for c in answer.get("citations", []):
            print(f"[{c['n']}] {c['title']} {_where(c['source_id'], c['location'])}")
        t = answer.get("timings", {})
        if answer.get("cached"):
            print(f"({answer.get('model')}; cached answer, total {t.get('total_ms', 0):.0f} ms)")
            return
        print(
            f"({answer.get('model')}; retrieval {t.get('retrieval_ms', 0):.0f} ms, first token "
            f"{t.get('first_token_ms') or 0:.0f} ms, total {t.get('total_ms', 0):.0f} ms)"
        )
        if answer.get("id"):
            print(f"(answer {answer['id']}: `appliance feedback rate {answer['id']} up|down` rates it)")

    emit(args, final, human)
    return 0
