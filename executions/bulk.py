"""Multi-row statements the ORM does not write: one compare-and-set UPDATE for many rows, each
row with its own values and its own expected state, returning the rows that matched.

    WITH v (v_id, v_status, …) AS (VALUES (…), (…))
    UPDATE table AS t SET col = v.v_col, …, counter = t.counter + v.v_counter
    FROM v WHERE t.id = v.v_id AND t.status = v.v_status … RETURNING id

PostgreSQL and SQLite (≥ 3.35) both run it as written; values are prepared by each column's
own field (JSON, UUID, dates as the backend stores them) and, on PostgreSQL, cast to the
column's type (a VALUES list has no column types of its own). The engine's group commit
(executions/lifecycle.py `append_batch`) writes a batch of runs' ends with it.
"""

from __future__ import annotations

import json
import math
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import JSONField, Model
from django.db.models.sql import InsertQuery

# The engine's few statements are prepared on their first run on a connection (psycopg's
# default, 5, left them unprepared on a pool of many connections taken in turn: an idle run's
# end was parsed and planned on every run, ~1.4 ms of the server's time, its log said).
PREPARE_THRESHOLD = 0
# Connections (psycopg) already told to plan prepared statements once (force_generic_plan).
_generic: weakref.WeakSet = weakref.WeakSet()


@contextmanager
def prepared_cursor() -> Iterator[Any]:
    """A cursor whose statements PostgreSQL parses and plans once per connection: psycopg
    prepares a statement (server-side binding) once it has run it `prepare_threshold` (5)
    times, and PostgreSQL then reuses its plan. Django's cursors bind client-side and never
    prepare: the engine's claim spent ~0.2 ms planning per run with a warm backend, ~1.4 ms
    with a cold one (23 indexes on the execution table). For statements of the same text
    every time, their values as parameters (the engine's claim and a run's end); elsewhere
    (SQLite) Django's own cursor."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            yield cursor
        return
    import psycopg  # PostgreSQL only, as above

    connection.ensure_connection()
    conn = connection.connection
    if conn.prepare_threshold != PREPARE_THRESHOLD:
        # Django turns preparing off for the whole connection (PgBouncer's sake); its own
        # cursors bind client-side and never prepare anyway, so this reaches only the
        # server-binding cursors made here. Without it nothing was ever prepared: each idle
        # run's end was parsed and planned anew (~0.7 ms of the server's time, its log said).
        conn.prepare_threshold = PREPARE_THRESHOLD
    if conn not in _generic and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        # Once per connection, outside any transaction (a rollback would undo it): plan each
        # prepared statement once. PostgreSQL otherwise kept planning the claim and the end
        # at every run (a custom plan: their generic plans' estimates, with an unknown LIMIT
        # and JSON rows, look dearer), ~0.4 ms each; their generic plans are index scans by
        # id and by `exec_runnable` (checked on a million rows). Only prepared statements
        # are affected, and only those made here are.
        conn.execute("SET plan_cache_mode = force_generic_plan")
        _generic.add(conn)
    raw = psycopg.Cursor(conn)
    tzloader = connection.connection.adapters.get_loader(1184, psycopg.pq.Format.TEXT)
    if connection.timezone != tzloader.timezone:  # as Django's create_cursor does
        from django.db.backends.postgresql.psycopg_any import register_tzloader

        register_tzloader(connection.timezone, raw)
    with connection.wrap_database_errors:
        cursor = connection._prepare_cursor(raw)
    with cursor:
        yield cursor


def update_many(
    model: type[Model],
    rows: list[dict[str, Any]],
    *,
    match: dict[str, str],
    set_: dict[str, str],
    add: dict[str, str] | None = None,
) -> list[Any]:
    """For each row (a dict of values by key), UPDATE the one whose fields in `match` equal
    the row's values (`match` maps a field to its key in the row): the fields of `set_` take
    the row's values under their keys, those of `add` grow by them. Returns the primary keys
    of the rows that matched, in one statement."""
    if not rows:
        return []
    values, update, params = update_many_sql(model, rows, match=match, set_=set_, add=add)
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {values} {update}", params)
        found = cursor.fetchall()
    to_python = model._meta.pk.to_python
    return [to_python(value) for (value,) in found]


def update_many_sql(
    model: type[Model],
    rows: list[dict[str, Any]],
    *,
    match: dict[str, str],
    set_: dict[str, str],
    add: dict[str, str] | None = None,
) -> tuple[str, str, list[Any]]:
    """update_many's statement in two parts, to be composed: the CTE `v (…) AS (VALUES …)` and
    the `UPDATE … FROM v … RETURNING id` (which may itself be a CTE), with their parameters."""
    add = add or {}
    shape = (model, connection.vendor, *match.items(), None, *set_.items(), None, *add.items())
    text = _update_texts.get((shape, len(rows)))
    if text is None:
        if len(_update_texts) > 1024:  # bounded: shapes are few, row counts up to a claim's
            _update_texts.clear()
        text = _update_texts[(shape, len(rows))] = _update_text(model, len(rows), match, set_, add)
    columns, values, update = text
    params: list[Any] = []
    for row in rows:
        for key, field, increment in columns:
            value = row[key]
            params.append(value if increment else field.get_db_prep_save(value, connection))
    return values, update, params


# update_many_sql's text per shape (model, database, columns) and number of rows: the same for
# every run's end; building it cost a third of an idle end's Python.
_update_texts: dict[tuple, tuple[list, str, str]] = {}


def _update_text(
    model: type[Model],
    count: int,
    match: dict[str, str],
    set_: dict[str, str],
    add: dict[str, str],
) -> tuple[list, str, str]:
    """update_many_sql's (columns, VALUES CTE, UPDATE) for a shape, without values."""
    meta = model._meta
    q = connection.ops.quote_name
    postgres = connection.vendor == "postgresql"
    # (key in the row, field, whether the value is an increment)
    columns = [(key, meta.get_field(name), False) for name, key in [*match.items(), *set_.items()]]
    columns += [(key, meta.get_field(name), True) for name, key in add.items()]

    def placeholder(field: Any, increment: bool) -> str:
        if not postgres:
            return "%s"
        if increment:
            return "%s::bigint"
        return f"%s::{_cast(field)}"

    row_sql = "(" + ", ".join(placeholder(f, inc) for _, f, inc in columns) + ")"
    # The types come from the first row; the others' values take them (a shorter statement:
    # psycopg caches its parsing of statements up to 4 KB only).
    plain = "(" + ", ".join(["%s"] * len(columns)) + ")"
    alias = {key: q(f"v_{key}") for key, _, _ in columns}

    def column(name: str) -> str:
        return q(meta.get_field(name).column)

    assignments = [f"{column(name)} = v.{alias[key]}" for name, key in set_.items()]
    assignments += [
        f"{column(name)} = t.{column(name)} + v.{alias[key]}" for name, key in add.items()
    ]
    conditions = " AND ".join(f"t.{column(name)} = v.{alias[key]}" for name, key in match.items())
    values = (
        f"v ({', '.join(alias[key] for key, _, _ in columns)}) AS (VALUES "
        + ", ".join([row_sql] + [plain] * (count - 1))
        + ")"
    )
    update = (
        f"UPDATE {q(meta.db_table)} AS t SET {', '.join(assignments)}"
        f" FROM v WHERE {conditions} RETURNING {q(meta.pk.column)}"
    )
    return columns, values, update


def _cast(field: Any) -> str:
    """The column type of `field`, for a cast (PostgreSQL), worked out once per field."""
    cast = _casts.get(field)
    if cast is None:
        db = field.rel_db_type if field.is_relation else field.db_type
        cast = _casts[field] = db(connection)
    return cast


_casts: dict[Any, str] = {}


def values_sql(
    fields: list[Any], rows: list[list[Any]], *, prepared: bool = False, ordinal: bool = False
) -> tuple[str, list[Any]]:
    """`(VALUES (%s::type, …), …)` of `rows` (one value per field of `fields`), each value
    prepared by its field (unless `prepared`) and cast to its column's type: a VALUES list
    that is not an INSERT's own has no column types (PostgreSQL). `ordinal`: each row ends
    with its position (0, 1, …)."""
    params: list[Any] = []
    for row in rows:
        if prepared:
            params += row
        else:
            params += [f.get_db_prep_save(v, connection) for f, v in zip(fields, row, strict=True)]
    return values_text(fields, len(rows), ordinal=ordinal), params


def values_text(fields: list[Any], count: int, *, ordinal: bool = False) -> str:
    """values_sql's text for `count` rows, without their values (it depends on nothing else)."""
    # Cast in the first row only: the others take its types (and the statement stays short
    # enough for psycopg to cache its parsing, up to 4 KB).
    casts = ", ".join(f"%s::{_cast(f)}" for f in fields)
    plain = ", ".join(["%s"] * len(fields))
    tails = [f", {i})" if ordinal else ")" for i in range(count)]
    heads = [casts] + [plain] * (count - 1)
    return f"(VALUES {', '.join(f'({h}{t}' for h, t in zip(heads, tails, strict=True))})"


def insert_where_sql(objs: list[Model], *, where: str) -> tuple[str, list[Any], Any]:
    """A multi-row INSERT of new rows of one model that inserts them only where `where` holds
    (a condition on the statement's other CTEs: that a compare-and-set matched), in their
    order, RETURNING the auto id. PostgreSQL; each value prepared as the ORM's INSERT does
    (pre_save with add=True, then get_db_prep_save), no model signals.

    The rows travel as ONE jsonb parameter (`jsonb_populate_recordset`, each value read by
    its column's own input function), not one parameter per value: a lone run's end had 136
    parameters, above what psycopg caches its parsing of (50), and each was bound on its own
    (~0.4 ms of client and ~0.4 ms of server time per idle run). The statement's text is the
    same for every run, whatever its number of rows. A value JSON cannot carry exactly falls
    back to the VALUES form."""
    model = type(objs[0])
    meta = model._meta
    auto = meta.auto_field
    fields = _fields_of(model)
    rows = [[f.pre_save(obj, True) for f in fields] for obj in objs]
    payload = _json_rows(fields, rows)
    if payload is not None:
        return _json_insert_sql(model, where), [payload], auto
    q = connection.ops.quote_name
    values, params = values_sql(fields, rows, ordinal=True)
    cols = ", ".join(f"c{j}" for j in range(len(fields)))
    sql = (
        f"INSERT INTO {q(meta.db_table)} ({', '.join(q(f.column) for f in fields)})"
        f" SELECT {cols} FROM {values} AS r ({cols}, c_ord) WHERE {where} ORDER BY c_ord"
        f" RETURNING {q(auto.column)}"
    )
    return sql, params, auto


def _fields_of(model: type[Model]) -> list[Any]:
    """The columns an INSERT of a new row of `model` writes (all but its auto id)."""
    fields = _insert_fields.get(model)
    if fields is None:
        auto = model._meta.auto_field
        fields = [f for f in model._meta.local_concrete_fields if f is not auto]
        _insert_fields[model] = fields
    return fields


def _json_insert_sql(model: type[Model], where: str) -> str:
    """The jsonb INSERT's text for `model` and `where`, made once (the same for every run)."""
    sql = _json_inserts.get((model, where))
    if sql is None:
        q = connection.ops.quote_name
        meta = model._meta
        table = q(meta.db_table)
        fields = _fields_of(model)
        columns = ", ".join(q(f.column) for f in fields)
        picked = ", ".join(f"r.{q(f.column)}" for f in fields)
        sql = _json_inserts[(model, where)] = (
            f"INSERT INTO {table} ({columns}) SELECT {picked} FROM jsonb_populate_recordset("
            f"NULL::{table}, %s::jsonb) WITH ORDINALITY AS r WHERE {where}"
            f" ORDER BY r.ordinality RETURNING {q(meta.auto_field.column)}"
        )
    return sql


# insert_where_sql's per model: its fields, and its statement's text per `where` (building it
# quoted ~90 names per idle run's end).
_insert_fields: dict[type[Model], list[Any]] = {}
_json_inserts: dict[tuple[type[Model], str], str] = {}


def _json_rows(fields: list[Any], rows: list[list[Any]]) -> str | None:
    """`rows` as the text of one JSON array of objects keyed by column, each value as its
    column reads it back (jsonb_populate_recordset): JSON fields as their own JSON (their
    encoder), dates as ISO 8601 with their offset, UUIDs and decimals as strings. None when a
    value has no exact JSON form here (then the caller binds them one by one)."""
    # Per call, not per value: a field's hash is Python code (Django's), ~100 values per end.
    keys = [_json_keys[field] for field in fields]
    json_fields = [isinstance(field, JSONField) for field in fields]
    out = []
    for row in rows:
        items = []
        for key, field, is_json, value in zip(keys, fields, json_fields, row, strict=True):
            text = _json_value(field, value, is_json)
            if text is None:
                return None
            items.append(f"{key}:{text}")
        out.append("{" + ",".join(items) + "}")
    return "[" + ",".join(out) + "]"


class _JsonKeys(dict):
    """A field's column name as a JSON key, worked out once per field."""

    def __missing__(self, field: Any) -> str:
        key = self[field] = json.dumps(field.column)
        return key


_json_keys = _JsonKeys()


def _json_value(field: Any, value: Any, is_json: bool) -> str | None:
    if value is None:
        return "null"
    if is_json:
        if hasattr(value, "resolve_expression"):
            return None
        return json.dumps(value, cls=field.encoder)
    # The types a column's own input reads as the ORM would have prepared them, without the
    # ORM's per-field preparation (most of this function's time): text, integers, booleans,
    # UUIDs, aware datetimes.
    kind = type(value)
    if kind is str:
        return json.dumps(value)
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is uuid.UUID:
        return f'"{value}"'
    if kind is datetime and value.tzinfo is not None:
        return f'"{value.isoformat()}"'
    if hasattr(value, "resolve_expression"):
        return None
    value = field.get_db_prep_save(value, connection)
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return None  # not JSON
    if isinstance(value, bool | int | float | str):
        return json.dumps(value)
    if isinstance(value, datetime | date | time):
        return f'"{value.isoformat()}"'
    if isinstance(value, uuid.UUID | Decimal):
        return f'"{value}"'
    return None


def insert_pair(first: Model, second: Model) -> None:
    """INSERT two new rows, `second` after `first` (it may reference it), in ONE statement on
    PostgreSQL — `WITH _first AS (INSERT …) INSERT … RETURNING id`: one round trip instead of
    two. The foreign keys are checked at commit (Django's are DEFERRABLE INITIALLY DEFERRED).
    Each INSERT is compiled by the ORM's own compiler (fields' pre_save, auto_now, JSON and
    UUID preparation), as `save(force_insert=True)` would; no model signals (none are
    connected to the rows written with it). Elsewhere: the two saves."""
    if connection.vendor != "postgresql":
        first.save(force_insert=True)
        second.save(force_insert=True)
        return
    sql1, params1, _ = _insert_sql(first)
    sql2, params2, auto = _insert_sql(second)
    # Prepared (the same text every start): parsed and planned once per connection, where
    # Django's cursor sent it anew with its values inlined (0.3 ms of an idle start's 1.8).
    with prepared_cursor() as cursor:
        cursor.execute(f"WITH _first AS ({sql1}) {sql2}", (*params1, *params2))
        if auto is not None:
            setattr(second, auto.attname, cursor.fetchone()[0])
    for obj in (first, second):
        obj._state.adding = False
        obj._state.db = connection.alias


def insert_many(objs: list[Model]) -> list[Model]:
    """`bulk_create` for new rows of one model; see `insert_groups`."""
    insert_groups([objs])
    return objs


def insert_groups(groups: list[list[Model]]) -> None:
    """`bulk_create` for new rows of one or more models (a batch's transitions and their
    events), ids set on the objects. On PostgreSQL, ONE statement for all the groups
    (`WITH g0 AS (INSERT … RETURNING id), g1 AS (…) SELECT …`: one round trip, not one per
    model), each group's rows as ONE jsonb parameter (insert_where_sql, as a lone run's end
    writes them), the ids read back in row order. bulk_create compiled its statement anew
    and prepared every value through its field into one array per column: a 64-run batch
    spent more of its CPU there than computing the runs (docs/performance-history.md, "Engine").
    Other databases, rows with a primary key set, or a value that is an expression:
    bulk_create, one group at a time."""
    groups = [objs for objs in groups if objs]
    if not groups:
        return
    parts = [_json_insert(objs) for objs in groups] if connection.vendor == "postgresql" else []
    if not parts or None in parts:
        for objs in groups:
            type(objs[0]).objects.bulk_create(objs)
        return
    ready = [part for part in parts if part is not None]
    params = [value for _, values, _ in ready for value in values]
    q = connection.ops.quote_name
    ctes = ", ".join(f"g{i} AS ({part_sql})" for i, (part_sql, _, _) in enumerate(ready))
    picks = [f"SELECT {i}, {q(auto.column)} FROM g{i}" for i, (_, _, auto) in enumerate(ready)]
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {ctes} {' UNION ALL '.join(picks)}", params)
        found = cursor.fetchall()
    for i, (objs, (_, _, auto)) in enumerate(zip(groups, ready, strict=True)):
        # Each group's ids in the order its rows were inserted (ORDER BY, one sequence).
        ids = sorted(pk for group, pk in found if group == i)
        for obj, pk in zip(objs, ids, strict=True):
            setattr(obj, auto.attname, pk)
            obj._state.adding = False
            obj._state.db = connection.alias


def _json_insert(objs: list[Model]) -> tuple[str, list[Any], Any] | None:
    """insert_where_sql of `objs` (always inserted), or None when the ORM must write them: no
    auto id, a primary key set, or a value JSON does not carry exactly (an expression among
    them: each value is looked at once, by _json_rows)."""
    model = type(objs[0])
    auto = model._meta.auto_field
    if auto is None or any(obj.pk is not None for obj in objs):
        return None
    fields = _fields_of(model)
    payload = _json_rows(fields, [[f.pre_save(obj, True) for f in fields] for obj in objs])
    if payload is None:
        return None
    return _json_insert_sql(model, "TRUE"), [payload], auto


# Per model: the INSERT's SQL, its fields and auto field. The statement's text never changes
# for a model (same columns every time); compiling it anew per start cost ~10% of a start.
_insert_cache: dict[type[Model], tuple[str, list[Any], Any]] = {}


def _insert_sql(obj: Model) -> tuple[str, tuple, Any]:
    """The ORM compiler's INSERT for a new row, the SQL compiled once per model; the values
    prepared per row as the compiler does (pre_save with add=True, get_db_prep_save)."""
    model = type(obj)
    if obj.pk is None or model._meta.auto_field is None:
        cached = _insert_cache.get(model)
        if cached is None:
            cached = _insert_cache[model] = _compile_insert(obj)
        sql, fields, auto = cached
        values = [f.pre_save(obj, True) for f in fields]
        if not any(hasattr(v, "resolve_expression") for v in values):
            prepared = zip(fields, values, strict=True)
            params = tuple(f.get_db_prep_save(v, connection) for f, v in prepared)
            return sql, params, auto
    query, auto = _insert_query(obj)
    compiler = query.get_compiler(connection=connection)
    compiler.returning_fields = [auto] if auto is not None else None
    [(sql, params)] = compiler.as_sql()
    return sql, tuple(params), auto


def _insert_query(obj: Model) -> tuple[InsertQuery, Any]:
    meta = obj._meta
    auto = meta.auto_field if obj.pk is None else None
    query = InsertQuery(type(obj))
    query.insert_values([f for f in meta.local_concrete_fields if f is not auto], [obj])
    return query, auto


def _compile_insert(obj: Model) -> tuple[str, list[Any], Any]:
    query, auto = _insert_query(obj)
    compiler = query.get_compiler(connection=connection)
    compiler.returning_fields = [auto] if auto is not None else None
    [(sql, _)] = compiler.as_sql()
    return sql, list(query.fields), auto
