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

from typing import Any

from django.db import connection
from django.db.models import Model


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
    meta = model._meta
    q = connection.ops.quote_name
    postgres = connection.vendor == "postgresql"
    add = add or {}
    # (key in the row, field, whether the value is an increment)
    columns = [(key, meta.get_field(name), False) for name, key in [*match.items(), *set_.items()]]
    columns += [(key, meta.get_field(name), True) for name, key in add.items()]

    def placeholder(field: Any, increment: bool) -> str:
        if not postgres:
            return "%s"
        if increment:
            return "%s::bigint"
        cast = field.rel_db_type(connection) if field.is_relation else field.db_type(connection)
        return f"%s::{cast}"

    row_sql = "(" + ", ".join(placeholder(f, inc) for _, f, inc in columns) + ")"
    params: list[Any] = []
    for row in rows:
        for key, field, increment in columns:
            value = row[key]
            params.append(value if increment else field.get_db_prep_save(value, connection))
    alias = {key: q(f"v_{key}") for key, _, _ in columns}

    def column(name: str) -> str:
        return q(meta.get_field(name).column)

    assignments = [f"{column(name)} = v.{alias[key]}" for name, key in set_.items()]
    assignments += [
        f"{column(name)} = t.{column(name)} + v.{alias[key]}" for name, key in add.items()
    ]
    conditions = " AND ".join(f"t.{column(name)} = v.{alias[key]}" for name, key in match.items())
    sql = (
        f"WITH v ({', '.join(alias[key] for key, _, _ in columns)}) AS (VALUES "
        + ", ".join([row_sql] * len(rows))
        + f") UPDATE {q(meta.db_table)} AS t SET {', '.join(assignments)}"
        f" FROM v WHERE {conditions} RETURNING {q(meta.pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = cursor.fetchall()
    to_python = meta.pk.to_python
    return [to_python(value) for (value,) in found]
