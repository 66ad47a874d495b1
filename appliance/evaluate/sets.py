"""Eval set files: the BEIR retrieval layout and the QA JSONL format, read and checked into items.

A set arrives as files (relative name -> text), from a directory or an upload:

- retrieval (BEIR): `corpus.jsonl` ({_id, title?, text}), `queries.jsonl` ({_id, text}) and
  `qrels/test.tsv` (query id, document id, grade; an optional header line);
- QA: `questions.jsonl` (one QAItem a line: question, id?, kind?, answers?, answer?, gold?,
  support?) and optionally `corpus.jsonl`, whose `_id`s the items' `gold` names.

Every problem is an InvalidInput naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from appliance.errors import InvalidInput
from appliance.records import EvalItem, QAItem

CORPUS = "corpus.jsonl"
QUERIES = "queries.jsonl"
QRELS = "qrels/test.tsv"
QUESTIONS = "questions.jsonl"
SET_FILES = (CORPUS, QUERIES, QRELS, QUESTIONS)
QA_KINDS = ("answerable", "unanswerable")
# Set kinds in the QA format: files (qa), written from a collection (generated), from user feedback.
QA_SET_KINDS = ("qa", "generated", "feedback")
SET_KINDS = ("retrieval", *QA_SET_KINDS)


@dataclass(frozen=True, slots=True)
class CorpusDocument:
    id: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class ParsedSet:
    kind: str  # retrieval | qa
    items: list[EvalItem]
    corpus: list[CorpusDocument]

    @property
    def content_hash(self) -> str:
        return content_hash(self.items, self.corpus)


def content_hash(items: Sequence[EvalItem], corpus: Sequence[CorpusDocument] = ()) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(msgspec.json.encode(item) + b"\n")
    for doc in corpus:
        digest.update(json.dumps([doc.id, doc.title, doc.text]).encode() + b"\n")
    return digest.hexdigest()


def read_dir(path: Path) -> dict[str, str]:
    """The set's files under `path` (those it has of SET_FILES)."""
    if not path.is_dir():
        raise InvalidInput(f"{path}: not a directory")
    files = {}
    for name in SET_FILES:
        file = path / name
        if file.is_file():
            try:
                files[name] = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidInput(f"{file}: cannot read: {exc}") from None
    return files


def parse_set(files: Mapping[str, str]) -> ParsedSet:
    """A retrieval set when `queries.jsonl` is there, a QA set when `questions.jsonl` is."""
    unknown = sorted(set(files) - set(SET_FILES))
    if unknown:
        raise InvalidInput(f"unknown files {unknown}: an eval set has {', '.join(SET_FILES)}")
    if QUERIES in files and QUESTIONS in files:
        raise InvalidInput(f"give {QUERIES} (a retrieval set) or {QUESTIONS} (a QA set), not both")
    corpus = _corpus(files[CORPUS]) if CORPUS in files else []
    if QUERIES in files:
        for name in (CORPUS, QRELS):
            if name not in files:
                raise InvalidInput(f"a retrieval set (BEIR layout) needs {name} beside {QUERIES}")
        return ParsedSet("retrieval", _retrieval_items(files[QUERIES], files[QRELS], corpus), corpus)
    if QUESTIONS in files:
        rows = [
            (f"{QUESTIONS}:{line}", _qa_item(f"{QUESTIONS}:{line}", obj))
            for line, obj in _jsonl(QUESTIONS, files[QUESTIONS])
        ]
        if not rows:
            raise InvalidInput(f"{QUESTIONS}: no items")
        items = check_qa_items([item for _, item in rows], [where for where, _ in rows])
        if corpus:
            ids = {d.id for d in corpus}
            for (where, _), item in zip(rows, items, strict=True):
                missing = [g for g in item.gold if g not in ids]
                if missing:
                    raise InvalidInput(f"{where}: gold {missing} names no document of {CORPUS}")
        return ParsedSet("qa", items, corpus)
    raise InvalidInput(
        f"no eval set here: expected {QUESTIONS} (QA) or {QUERIES}, {CORPUS} and {QRELS} (BEIR retrieval)"
    )


def check_qa_items(items: Sequence[QAItem | dict], labels: Sequence[str] | None = None) -> list[EvalItem]:
    """QA items checked (question, kind, unique ids; ids given to those without) as stored items;
    an answerable item's gold documents are its relevant ones (grade 1). `labels` say where each
    item came from in errors (default `items[i]`)."""
    out: list[EvalItem] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(items):
        label = labels[index] if labels is not None else f"items[{index}]"
        if isinstance(raw, dict):
            item = _qa_item(label, raw)
        elif isinstance(raw, QAItem):
            item = raw
        else:
            raise InvalidInput(f"{label}: a QA item is an object, not {type(raw).__name__}")
        if not item.question.strip():
            raise InvalidInput(f"{label}: question is empty")
        if item.kind not in QA_KINDS:
            raise InvalidInput(f"{label}: kind {item.kind!r} is not one of {', '.join(QA_KINDS)}")
        item_id = item.id or f"q{index + 1}"
        if item_id in seen:
            raise InvalidInput(f"{label}: duplicate id {item_id!r} (first at {seen[item_id]})")
        seen[item_id] = label
        fields = {f: getattr(item, f) for f in QAItem.__struct_fields__}
        relevance = {g: 1 for g in item.gold} if item.kind == "answerable" else {}
        out.append(EvalItem(**{**fields, "id": item_id, "relevance": relevance}))
    if not out:
        raise InvalidInput("a QA set needs at least one item")
    return out


# -- reading ------------------------------------------------------------------------------------
def _jsonl(name: str, text: str) -> Iterator[tuple[int, dict]]:
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{name}:{number}: not valid JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise InvalidInput(f"{name}:{number}: each line must be a JSON object")
        yield number, obj


def _string(where: str, obj: dict, key: str, required: bool = True) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise InvalidInput(f"{where}: missing field {key!r}")
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool) and key in ("_id", "id"):
        return str(value)
    if not isinstance(value, str):
        raise InvalidInput(f"{where}: {key!r} must be a string")
    return value


def _strings(where: str, obj: dict, key: str) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise InvalidInput(f"{where}: {key!r} must be a list of strings")
    return [str(v) for v in value]


def _corpus(text: str) -> list[CorpusDocument]:
    docs, seen = [], {}
    for line, obj in _jsonl(CORPUS, text):
        where = f"{CORPUS}:{line}"
        doc_id = _string(where, obj, "_id")
        if not doc_id:
            raise InvalidInput(f"{CORPUS}:{line}: '_id' is empty")
        if doc_id in seen:
            raise InvalidInput(f"{CORPUS}:{line}: duplicate _id {doc_id!r} (first at line {seen[doc_id]})")
        seen[doc_id] = line
        body = _string(where, obj, "text")
        if not body.strip():
            raise InvalidInput(f"{CORPUS}:{line}: 'text' is empty")
        docs.append(CorpusDocument(doc_id, _string(where, obj, "title", required=False), body))
    if not docs:
        raise InvalidInput(f"{CORPUS}: no documents")
    return docs


_QA_FIELDS = ("id", "question", "kind", "answers", "answer", "gold", "support", "metadata")


def _qa_item(where: str, obj: dict) -> QAItem:
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidInput(f"{where}: 'metadata' must be an object")
    return QAItem(
        id=_string(where, obj, "id", required=False),
        question=_string(where, obj, "question"),
        kind=_string(where, obj, "kind", required=False) or "answerable",
        answers=_strings(where, obj, "answers"),
        answer=_string(where, obj, "answer", required=False),
        gold=_strings(where, obj, "gold"),
        support=_strings(where, obj, "support"),
        # Fields the format does not name are kept with the item.
        metadata={**metadata, **{k: v for k, v in obj.items() if k not in _QA_FIELDS}},
    )


def _retrieval_items(queries_text: str, qrels_text: str, corpus: list[CorpusDocument]) -> list[EvalItem]:
    queries: dict[str, str] = {}
    for line, obj in _jsonl(QUERIES, queries_text):
        qid = _string(f"{QUERIES}:{line}", obj, "_id")
        if qid in queries:
            raise InvalidInput(f"{QUERIES}:{line}: duplicate _id {qid!r}")
        text = _string(f"{QUERIES}:{line}", obj, "text")
        if not text.strip():
            raise InvalidInput(f"{QUERIES}:{line}: 'text' is empty")
        queries[qid] = text
    documents = {d.id for d in corpus}
    relevance: dict[str, dict[str, int]] = {}
    for number, raw in enumerate(qrels_text.split("\n"), start=1):
        if not raw.strip():
            continue
        parts = raw.rstrip("\n").split("\t")
        if len(parts) == 4:  # TREC style: query, iteration, document, grade
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise InvalidInput(f"{QRELS}:{number}: expected 3 tab-separated columns (query, document, grade)")
        qid, doc_id, grade = (p.strip() for p in parts)
        try:
            value = int(grade)
        except ValueError:
            if number == 1 and qid not in queries:
                continue  # the header line ("query-id  corpus-id  score")
            raise InvalidInput(f"{QRELS}:{number}: grade {grade!r} is not an integer") from None
        if qid not in queries:
            raise InvalidInput(f"{QRELS}:{number}: query {qid!r} is not in {QUERIES}")
        if doc_id not in documents:
            raise InvalidInput(f"{QRELS}:{number}: document {doc_id!r} names no document of {CORPUS}")
        if doc_id in relevance.setdefault(qid, {}):
            raise InvalidInput(f"{QRELS}:{number}: query {qid!r} and document {doc_id!r} judged twice")
        relevance[qid][doc_id] = value
    items = [
        EvalItem(
            id=qid,
            question=text,
            kind="query",
            gold=[d for d, g in relevance[qid].items() if g > 0],
            relevance=relevance[qid],
        )
        for qid, text in queries.items()
        if qid in relevance  # a query nobody judged cannot be scored
    ]
    if not items:
        raise InvalidInput(f"{QRELS}: no judged query of {QUERIES}")
    return items
