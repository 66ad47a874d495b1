"""`sql` tools: one fixed, parameterised SELECT over the views the admin exposes (settings
workflows.sql_views), checked from DuckDB's own parse tree and run in a read-only transaction."""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from collections.abc import Iterator, Mapping
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


def _tree(sql: str) -> dict:
    con = duckdb.connect(":memory:")
    try:
        return json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    finally:
        con.close()


def _nodes(value: Any) -> Iterator[dict]:
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _nodes(v)
    elif isinstance(value, list):
        for v in value:
            yield from _nodes(v)


def parameters(sql: str) -> list[str]:
    """The named parameters ($name) of a query a sql tool may run; QueryRefused with the reason
    otherwise. Checks what needs no settings: one SELECT, no WITH of its own, no table functions,
    no schema-qualified names, no positional parameters, no functions that reach outside."""
    tree = _tree(sql)
    if tree.get("error"):
        message = tree.get("error_message", "")
        if "Only SELECT" in message:
            raise QueryRefused("only a SELECT may run (no writes, DDL, ATTACH, COPY, PRAGMA or SET)")
        raise QueryRefused(message or "the query does not parse")
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise QueryRefused(f"one statement only, not {len(statements)}")
    names: list[str] = []
    for node in _nodes(statements[0]):
        if node.get("cte_map", {}).get("map"):
            # A WITH of the query's own could shadow a view name in one scope and leave the real
            # table of that name reachable in another; views are defined in settings instead.
            raise QueryRefused("a tool's query has no WITH of its own: expose a view in settings instead")
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            fn = (node.get("function") or {}).get("function_name", "?")
            raise QueryRefused(f"table function {fn}() is not allowed: read only the exposed views")
        if kind == "BASE_TABLE" and (node.get("schema_name") or node.get("catalog_name")):
            raise QueryRefused(
                f"{node.get('schema_name') or node.get('catalog_name')}.{node.get('table_name')}: "
                "name an exposed view, without a schema"
            )
        if node.get("class") == "FUNCTION":
            fn = str(node.get("function_name", "")).lower()
            if fn in DENIED_FUNCTIONS or fn.startswith(DENIED_PREFIXES):
                raise QueryRefused(f"function {fn}() is not allowed in a tool's query")
        if node.get("class") == "PARAMETER":
            ident = str(node.get("identifier", ""))
            if ident.isdigit():
                raise QueryRefused("use named parameters ($name), bound from the tool's input")
            if ident not in names:
                names.append(ident)
    return names


def tables(sql: str) -> list[str]:
    """The names a query reads (after parameters() accepted it)."""
    tree = _tree(sql)
    found: list[str] = []
    for node in _nodes(tree.get("statements") or []):
        if node.get("type") == "BASE_TABLE" and node.get("table_name") not in found:
            found.append(node["table_name"])
    return found


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
) -> dict:
    """Run a tool's query: every name it reads must be an exposed view (each view is put before the
    query as a WITH, so it shadows any table of its name); its parameters are bound from `args`,
    never written into the text; the transaction is read-only and rolled back. `cursor` must be the
    caller's own (it is rolled back here). {rows, columns, truncated}."""
    wanted = parameters(sql)
    unexposed = [t for t in tables(sql) if t not in views]
    if unexposed:
        raise QueryRefused(
            f"{', '.join(unexposed)}: not among the views the admin exposes (settings "
            f"workflows.sql_views: {', '.join(sorted(views)) or 'none'})"
        )
    for name, body in views.items():
        try:
            if parameters(body):
                raise QueryRefused("a view takes no parameters")
        except QueryRefused as exc:
            raise QueryRefused(f"settings workflows.sql_views.{name}: {exc}") from None
    used = [v for v in views if v in tables(sql)]
    prefix = "WITH " + ", ".join(f"{_quote(v)} AS ({views[v].strip().rstrip(';')})" for v in used) + " "
    text = (prefix if used else "") + sql.strip().rstrip(";")
    params = {name: args.get(name) for name in wanted}
    cursor.execute("BEGIN TRANSACTION READ ONLY")
    try:
        result = cursor.execute(text, params) if params else cursor.execute(text)
        columns = [d[0] for d in result.description or []]
        rows = result.fetchmany(max_rows + 1)
    except duckdb.Error as exc:
        raise QueryRefused(f"the query failed: {exc}") from None
    finally:
        cursor.execute("ROLLBACK")
    return {
        "rows": [{c: _json(v) for c, v in zip(columns, row, strict=True)} for row in rows[:max_rows]],
        "columns": columns,
        "truncated": len(rows) > max_rows,
    }
