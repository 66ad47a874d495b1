"""`sql` tools: one fixed, parameterised SELECT over the views the admin exposes (settings
workflows.sql_views), checked from DuckDB's own parse tree and run in a read-only transaction;
for a run whose key reads only some collections, the views see only those collections' rows."""

from __future__ import annotations

import datetime
import decimal
import functools
import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import duckdb

# Functions that reach beyond the exposed views (settings, files, the catalogue) even in a SELECT.
DENIED_FUNCTIONS = frozenset({"getenv", "current_setting", "read_text", "read_blob", "query", "query_table"})
DENIED_PREFIXES = ("duckdb_", "pragma_", "read_", "sqlite_", "parquet_", "glob")


def output_schema(given: dict | None) -> dict:
    """What an sql tool returns: {rows, columns, truncated}; a Tool's own output_schema describes it
    too (typically its rows' items), and the envelope's fields it leaves out are added."""
    envelope = {
        "rows": {"type": "array", "items": {"type": "object"}},
        "columns": {"type": "array", "items": {"type": "string"}},
        "truncated": {"type": "boolean"},
    }
    given = dict(given or {"type": "object"})
    given["properties"] = envelope | dict(given.get("properties") or {})
    return given


class QueryRefused(ValueError):
    """A query a sql tool may not run: what it tried, in words."""


# The catalogue tables a run limited to some collections reads through views, each as the rows of
# its collections only (a WITH of that name before the views shadows the table).
SCOPE_PARAMETER = "appliance_scope"
_IN_SCOPE = f"IN (SELECT unnest(${SCOPE_PARAMETER}::VARCHAR[]))"
SCOPED_TABLES = {
    "collections": f"SELECT * FROM main.collections WHERE name {_IN_SCOPE}",
    "documents": f"SELECT * FROM main.documents WHERE collection {_IN_SCOPE}",
    "chunks": f"SELECT * FROM main.chunks WHERE document_id IN "
    f"(SELECT id FROM main.documents WHERE collection {_IN_SCOPE})",
}


@dataclass(frozen=True, slots=True)
class CollectionScope:
    """A run whose key reads only `collections`. Its views see the catalogue (SCOPED_TABLES) cut
    to those collections; a view that reads another of the appliance's own tables (`internal`:
    traces, conversations, keys... which hold other collections' text), a schema-qualified name or
    a table function is refused to it. Tables the admin made are theirs to expose to every key."""

    collections: tuple[str, ...]
    internal: frozenset[str]


# Table references that read something other than a named relation: table functions, SHOW /
# DESCRIBE / SUMMARIZE (the catalogue), and the engine's internal ones.
DENIED_REFS = {"TABLE_FUNCTION": "a table function", "SHOW_REF": "SHOW, DESCRIBE or SUMMARIZE"}
ALLOWED_REFS = {"BASE_TABLE", "SUBQUERY", "JOIN", "EMPTY", "EXPRESSION_LIST", "PIVOT"}
_PARSER = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None


def _statement(sql: str) -> dict:
    """The one SELECT statement of `sql`, as DuckDB's own parser sees it; QueryRefused otherwise."""
    global _parser
    with _PARSER:
        if _parser is None:
            _parser = duckdb.connect(":memory:")  # parses only: it holds no data
        tree = json.loads(_parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    if tree.get("error"):
        message = tree.get("error_message", "")
        if "Only SELECT" in message:
            raise QueryRefused("only a SELECT may run (no writes, DDL, ATTACH, COPY, PRAGMA or SET)")
        raise QueryRefused(message or "the query does not parse")
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise QueryRefused(f"one statement only, not {len(statements)}")
    return statements[0]


def _nodes(value: Any) -> Iterator[dict]:
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _nodes(v)
    elif isinstance(value, list):
        for v in value:
            yield from _nodes(v)


def _ref_kind(node: dict) -> str | None:
    """The kind of a table reference node (BASE_TABLE, TABLE_FUNCTION, ...); None for other nodes."""
    return node.get("type") if isinstance(node.get("type"), str) else None


def _denied_function(node: dict) -> str | None:
    """The name of a function that reaches beyond the views (settings, files, the catalogue)."""
    if node.get("class") != "FUNCTION":
        return None
    fn = str(node.get("function_name", "")).lower()
    return fn if fn in DENIED_FUNCTIONS or fn.startswith(DENIED_PREFIXES) else None


@functools.lru_cache(maxsize=256)
def inspect(sql: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(named parameters, names read) of a query a sql tool may run; QueryRefused with the reason
    otherwise. Checks what needs no settings: one SELECT, no WITH of its own, no table functions or
    SHOW, no schema-qualified names, no positional parameters, no functions that reach outside."""
    params: list[str] = []
    names: list[str] = []
    for node in _nodes(_statement(sql)):
        if node.get("cte_map", {}).get("map"):
            # A WITH of the query's own could shadow a view name in one scope and leave the real
            # table of that name reachable in another; views are defined in settings instead.
            raise QueryRefused("a tool's query has no WITH of its own: expose a view in settings instead")
        kind = _ref_kind(node)
        if kind in DENIED_REFS:
            fn = (node.get("function") or {}).get("function_name")
            what = f"table function {fn}()" if fn else DENIED_REFS[kind]
            raise QueryRefused(f"{what} is not allowed: read only the exposed views")
        if "sample" in node and "query_location" in node and "class" not in node and kind not in ALLOWED_REFS:
            raise QueryRefused(f"a {kind} table reference is not allowed: read only the exposed views")
        if kind == "BASE_TABLE":
            if node.get("schema_name") or node.get("catalog_name"):
                raise QueryRefused(
                    f"{node.get('schema_name') or node.get('catalog_name')}.{node.get('table_name')}: "
                    "name an exposed view, without a schema"
                )
            if node["table_name"] not in names:
                names.append(node["table_name"])
        if fn := _denied_function(node):
            raise QueryRefused(f"function {fn}() is not allowed in a tool's query")
        if node.get("class") == "PARAMETER":
            ident = str(node.get("identifier", ""))
            if ident.isdigit():
                raise QueryRefused("use named parameters ($name), bound from the tool's input")
            if ident not in params:
                params.append(ident)
    return tuple(params), tuple(names)


def parameters(sql: str) -> list[str]:
    """The named parameters ($name) of a query a sql tool may run (QueryRefused if it may not)."""
    return list(inspect(sql)[0])


@functools.lru_cache(maxsize=64)
def _check_view(body: str) -> None:
    """A view is the admin's own SELECT (any table, function or WITH), but one, and without parameters."""
    if any(node.get("class") == "PARAMETER" for node in _nodes(_statement(body))):
        raise QueryRefused("a view takes no parameters")


@functools.lru_cache(maxsize=64)
def _check_scoped_view(name: str, body: str, internal: frozenset[str]) -> None:
    """Whether a run of a key limited to collections may read view `name` (QueryRefused if not)."""
    for node in _nodes(_statement(body)):
        kind = _ref_kind(node)
        if kind in DENIED_REFS or (
            kind == "BASE_TABLE" and (node.get("schema_name") or node.get("catalog_name"))
        ):
            raise QueryRefused(
                f"view {name} reads {DENIED_REFS.get(kind) or 'a schema-qualified name'}, which a key "
                "limited to collections may not: only an admin key's run may use it"
            )
        table = node.get("table_name") if kind == "BASE_TABLE" else None
        if table in internal and table not in SCOPED_TABLES:
            raise QueryRefused(
                f"view {name} reads the appliance's table {table}, which holds every collection's "
                "data: only an admin key's run may use it"
            )
        if fn := _denied_function(node):
            raise QueryRefused(f"view {name} calls {fn}(), which a key limited to collections may not")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _json(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    return value


def execute(
    cursor: duckdb.DuckDBPyConnection,
    views: Mapping[str, str],
    sql: str,
    args: Mapping[str, Any],
    max_rows: int,
    stop: threading.Event | None = None,
    scope: CollectionScope | None = None,
) -> dict:
    """Run a tool's query: every name it reads must be an exposed view (each view is put before the
    query as a WITH, so it shadows any table of its name); its parameters are bound from `args`,
    never written into the text; the transaction is read-only and rolled back. `cursor` must be the
    caller's own (it is rolled back here); `stop`, once set (the call's timeout, the run stopping),
    interrupts the query. `scope` (None: an admin key's run) cuts what the views see to a key's
    collections. {rows, columns, truncated}."""
    wanted, read = inspect(sql)
    unexposed = [t for t in read if t not in views]
    if unexposed:
        raise QueryRefused(
            f"{', '.join(unexposed)}: not among the views the admin exposes (settings "
            f"workflows.sql_views: {', '.join(sorted(views)) or 'none'})"
        )
    used = [v for v in views if v in read]
    for name in used:
        try:
            _check_view(views[name])
        except QueryRefused as exc:
            raise QueryRefused(f"settings workflows.sql_views.{name}: {exc}") from None
    ctes = [f"{_quote(v)} AS ({views[v].strip().rstrip(';')})" for v in used]
    params = {name: args.get(name) for name in wanted}
    if scope is not None:
        for name in used:
            _check_scoped_view(name, views[name], scope.internal)
        ctes = [f"{_quote(t)} AS ({body})" for t, body in SCOPED_TABLES.items()] + ctes
        params[SCOPE_PARAMETER] = list(scope.collections)
    text = ("WITH " + ", ".join(ctes) + " " if ctes else "") + sql.strip().rstrip(";")
    done = threading.Event()
    if stop is not None:

        def watch() -> None:
            while not done.wait(0.05):
                if stop.is_set():
                    cursor.interrupt()
                    return

        threading.Thread(target=watch, daemon=True, name="sql-interrupt").start()
    cursor.execute("BEGIN TRANSACTION READ ONLY")
    try:
        result = cursor.execute(text, params) if params else cursor.execute(text)
        columns = [d[0] for d in result.description or []]
        rows = result.fetchmany(max_rows + 1)
    except duckdb.Error as exc:
        raise QueryRefused(f"the query failed: {exc}") from None
    finally:
        done.set()
        cursor.execute("ROLLBACK")
    return {
        "rows": [{c: _json(v) for c, v in zip(columns, row, strict=True)} for row in rows[:max_rows]],
        "columns": columns,
        "truncated": len(rows) > max_rows,
    }
