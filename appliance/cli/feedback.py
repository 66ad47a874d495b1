"""`appliance feedback list|show|rate`: ratings of answers, an answer's trace, and rating one."""

from __future__ import annotations

import argparse

from appliance.cli.common import Parents, connect, emit


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser(
        "feedback", parents=[parents.client], help="list ratings of answers, show an answer's trace, rate one"
    )
    actions = p.add_subparsers(dest="action", required=True)
    f = actions.add_parser("list", parents=[parents.client], help="ratings, newest first")
    f.add_argument("--collection", "-c")
    f.add_argument("--rating", choices=["up", "down"])
    f.add_argument("--limit", type=int, default=50)
    f.add_argument("--offset", type=int, default=0)
    f.set_defaults(func=_list)
    f = actions.add_parser("show", parents=[parents.client], help="an answer's trace and its ratings")
    f.add_argument("answer_id", help="the id an answer carries (`ask --json` prints it)")
    f.set_defaults(func=_show)
    f = actions.add_parser("rate", parents=[parents.client], help="rate an answer up or down")
    f.add_argument("answer_id")
    f.add_argument("rating", choices=["up", "down"])
    f.add_argument("--comment")
    f.add_argument("--correct-answer", help="what the answer should have said")
    f.add_argument(
        "--source",
        action="append",
        dest="sources",
        help="a source id of the answer that holds the right answer (repeatable)",
    )
    f.set_defaults(func=_rate)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _list(args: argparse.Namespace) -> int:
    page = connect(args).feedback(args.collection, args.rating, args.limit, args.offset)

    def human(page: dict) -> None:
        if not page["items"]:
            print("no feedback")
        for item in page["items"]:
            mark = "+" if item["rating"] == "up" else "-"
            print(
                f"{mark} {item['answer_id']}  {item['rated_at'][:19]}  "
                f"{','.join(item['collections']) or '-':<16} {_clip(item['question'], 60)}"
            )
            if item.get("comment"):
                print(f"    comment: {_clip(item['comment'], 100)}")
            if item.get("correct_answer"):
                print(f"    correct: {_clip(item['correct_answer'], 100)}")
        shown = page["offset"] + len(page["items"])
        print(f"({shown} of {page['total']})")

    emit(args, page, human)
    return 0


def _show(args: argparse.Namespace) -> int:
    def human(t: dict) -> None:
        print(f"{t['id']}  {t['created_at'][:19]}  {t['model']}  ({t['prompt_version']})")
        print(f"collections: {', '.join(t['collections']) or '-'}   key: {t['key_id']}")
        print(f"question: {t['question']}")
        if t["query"] != t["question"]:
            print(f"query:    {t['query']}")
        print(f"answer:   {t['answer']}")
        for c in t["citations"]:
            print(f"  [{c['n']}] {c['title'] or c['source_id']} ({c['source_id']})")
        top = t.get("top_similarity")
        print(
            f"retrieved {len(t['retrieved'])} chunks (top similarity {top if top is None else round(top, 3)}), "
            f"gave {len(t['sources'])} sources; {t['usage']['prompt_tokens']} prompt + "
            f"{t['usage']['completion_tokens']} completion tokens; {t['latency_ms']:.0f} ms"
        )
        for r in t.get("ratings") or []:
            print(f"rated {r['rating']} by {r['key_id']} at {r['created_at'][:19]}: {r.get('comment') or ''}")

    emit(args, connect(args).answer_trace(args.answer_id), human)
    return 0


def _rate(args: argparse.Namespace) -> int:
    rated = connect(args).rate_answer(
        args.answer_id, args.rating, args.comment, args.correct_answer, args.sources
    )
    emit(args, rated, lambda r: print(f"rated {r['answer_id']} {r['rating']}"))
    return 0
