"""Orderings and pages of execution lists: numbered pages, and keyset pages (a cursor carrying the
last row's value and id) that cost the same at any depth."""

from __future__ import annotations

import base64
import json
import math
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import F, Q, QuerySet
from django.db.models.expressions import OrderBy

from executions.errors import BadRequest, ValidationFailed, field_error
from executions.models import Execution

ORDERABLE = {"created_at", "updated_at", "duration_ms", "cost", "started_at", "completed_at"}
NULLABLE = {"duration_ms", "cost", "started_at", "completed_at"}
MAX_LIMIT = 200
COUNT_CAP = 10_000
ONE_PASS = "steward_one_pass_count"  # the Query attribute one_pass_count sets
DEFERRED_OFFSET = 1_000  # from here on, a numbered page reads its ids first (_page_rows)


def order_executions(qs: QuerySet, ordering: str | None, direction: str | None = None) -> QuerySet:
    field = (ordering or "-created_at").strip()
    descending = field.startswith("-")
    field = field.lstrip("-+")
    if direction:
        if direction.lower() not in {"asc", "desc"}:
            raise ValidationFailed(
                "order direction must be asc or desc",
                details=[field_error("order_direction", "must be asc or desc")],
            )
        descending = direction.lower() == "desc"
    if field not in ORDERABLE:
        raise ValidationFailed(
            f"cannot order by {field!r}",
            details=[field_error("order_by", f"one of {', '.join(sorted(ORDERABLE))}")],
        )
    if field == "created_at":
        # id is a UUIDv7, so it orders like created_at and breaks ties for keyset paging.
        return qs.order_by("-id" if descending else "id")
    # NULLs last only where a column has them: a NOT NULL column ordered plainly is read from
    # its index in either direction.
    nulls = {"nulls_last": True} if field in NULLABLE else {}
    order = F(field).desc(**nulls) if descending else F(field).asc(**nulls)
    return qs.order_by(order, "-id" if descending else "id")


@dataclass
class Page:
    items: list
    total: int | None
    page: int
    limit: int
    next_cursor: str | None = None
    # False: `total` is a lower bound ("10,000+"), the count stopped at COUNT_CAP rows.
    exact: bool = True

    @property
    def total_display(self) -> str:
        """The total as a person reads it: "1,234", or "10,000+" when the count was capped."""
        if self.total is None:
            return ""
        return f"{self.total:,}" + ("" if self.exact else "+")

    @property
    def pages(self) -> int:
        if self.total is None:
            return 0
        return max(1, math.ceil(self.total / self.limit)) if self.total else 0

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"page": self.page, "limit": self.limit}
        if self.total is not None:
            meta.update(total=self.total, pages=self.pages)
            if not self.exact:
                meta["total_exact"] = False
        if self.next_cursor is not None or self.total is None:
            meta["next_cursor"] = self.next_cursor
        return meta


def page_params(params: Any) -> tuple[int, int]:
    errors = []
    page = _positive_int(params.get("page"), "page", 1, errors)
    limit = _positive_int(params.get("limit") or params.get("page_size"), "limit", 20, errors)
    if limit > MAX_LIMIT:
        errors.append(field_error("limit", f"must be at most {MAX_LIMIT}"))
    if errors:
        raise ValidationFailed("invalid pagination", details=errors)
    return page, limit


def _positive_int(value: Any, field: str, default: int, errors: list) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        errors.append(field_error(field, "must be a positive integer"))
        return default
    if number < 1:
        errors.append(field_error(field, "must be a positive integer"))
    return number


def paginate(qs: QuerySet, *, page: int, limit: int, exact: bool = False) -> Page:
    """A numbered page. The total is exact when it is cheap (at most COUNT_CAP rows from this
    page on) or asked for (`exact`); past that it says "at least": counting every row of a
    million-row workspace on every page costs more than the page. Cursor pages
    (keyset_page) are the way to walk deep."""
    offset = (page - 1) * limit
    if not exact and getattr(qs.query, ONE_PASS, False):
        counted_page = _one_pass_page(qs, offset, limit)
        if counted_page is not None:
            items, total = counted_page
            if items is None:  # more than the cap: the page alone, the count known capped
                items, total = _page_rows(qs, offset, limit), offset + COUNT_CAP
                return Page(items=items, total=total, page=page, limit=limit, exact=False)
            return Page(items=items, total=total, page=page, limit=limit)
    items = _page_rows(qs, offset, limit)
    if exact:
        return Page(items=items, total=qs.order_by().count(), page=page, limit=limit)
    # Any order counts the same rows; without one the database reads the cheapest way.
    counted = qs.order_by()[offset : offset + COUNT_CAP + 1].count()
    if offset and not counted:
        # Past the last page: the rows from here on say nothing of how many there are.
        total, whole = count_capped(qs)
        return Page(items=items, total=total, page=page, limit=limit, exact=whole)
    if counted <= COUNT_CAP:
        return Page(items=items, total=offset + counted, page=page, limit=limit)
    return Page(items=items, total=offset + COUNT_CAP, page=page, limit=limit, exact=False)


def _page_rows(qs: QuerySet, offset: int, limit: int) -> list:
    """The page's rows. Deep in an execution list, a deferred join: the OFFSET walks the ids
    alone (an index-only range of (workspace, id) for the default order), then only the
    page's rows are read, with their joins; the same rows in the same order, as every order
    ends with the id."""
    if offset < DEFERRED_OFFSET or qs.model is not Execution or qs.query.distinct:
        return list(qs[offset : offset + limit])
    ids = list(qs.values_list("pk", flat=True)[offset : offset + limit])
    rows = {row.pk: row for row in qs.order_by().filter(pk__in=ids)}
    return [rows[pk] for pk in ids if pk in rows]


def one_pass_count(qs: QuerySet) -> QuerySet:
    """Mark a list whose matches are few but scattered (a metadata filter: one tenant's runs,
    one heap page each): paginate then reads them once for both the page and the count."""
    qs = qs.all()
    setattr(qs.query, ONE_PASS, True)  # a Query's clones copy its attributes
    return qs


def _one_pass_page(qs: QuerySet, offset: int, limit: int) -> tuple[list | None, int] | None:
    """The page's ids and the count in one statement: the matches (at most the cap) read once,
    counted by a window and sorted there, then the page's rows by id. The page query and the
    count each read every match's heap page otherwise. (None, total) when there are more
    matches than the cap (the page is then read the usual way, the count not again); None when
    this cannot answer (an empty page, an order it cannot spell): paginate's usual way."""
    order = _order_columns(qs)
    if order is None:
        return None
    columns = {f"k{i}": F(field) for i, (field, _, _) in enumerate(order)}
    inner = qs.order_by().values(**columns)[: offset + COUNT_CAP + 1]
    sql, params = inner.query.sql_with_params()
    quote = connection.ops.quote_name
    spelled = ", ".join(
        f"s.{quote(f'k{i}')} {'DESC' if descending else 'ASC'}"
        + (" NULLS LAST" if nulls_last else "")
        for i, (_, descending, nulls_last) in enumerate(order)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT s.{quote('k' + str(len(order) - 1))}, COUNT(*) OVER () FROM ({sql}) s"
            f" ORDER BY {spelled} LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        found = cursor.fetchall()
    if not found:
        return None
    if found[0][1] > offset + COUNT_CAP:
        return None, found[0][1]
    ids = [uuid.UUID(str(pk)) for pk, _ in found]
    rows = {row.pk: row for row in qs.order_by().filter(pk__in=ids)}
    return [rows[pk] for pk in ids if pk in rows], found[0][1]


def _order_columns(qs: QuerySet) -> list[tuple[str, bool, bool]] | None:
    """(field, descending, nulls last) per ordering term, the id last; None for any other
    shape."""
    order = []
    for term in qs.query.order_by:
        if isinstance(term, str):
            name = term.lstrip("-")
            order.append((name, term.startswith("-"), False))
        elif isinstance(term, OrderBy) and isinstance(term.expression, F):
            order.append((term.expression.name, term.descending, bool(term.nulls_last)))
        else:
            return None
    if not order or order[-1][0] not in {"id", "pk"} or qs.query.distinct:
        return None
    order[-1] = ("pk", order[-1][1], False)
    return order


def count_capped(qs: QuerySet) -> tuple[int, bool]:
    """How many rows `qs` holds, counting at most COUNT_CAP + 1 of them: (n, exact). A list
    that shows its size says "10,000+" past the cap instead of counting a million rows."""
    counted = qs.order_by()[: COUNT_CAP + 1].count()
    return (counted, True) if counted <= COUNT_CAP else (COUNT_CAP, False)


def encode_cursor(execution: Execution) -> str:
    return base64.urlsafe_b64encode(str(execution.pk).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> uuid.UUID:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return uuid.UUID(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("cursor is not valid", details={"field": "cursor"}) from None


def keyset_page(qs: QuerySet, *, cursor: str | None, limit: int, descending: bool = True) -> Page:
    """Deep pages without COUNT: rows after the cursor's id in created order."""
    if cursor:
        anchor = decode_cursor(cursor)
        qs = qs.filter(pk__lt=anchor) if descending else qs.filter(pk__gt=anchor)
    qs = qs.order_by("-id" if descending else "id")
    rows = list(qs[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]) if more and rows else None
    return Page(items=rows, total=None, page=1, limit=limit, next_cursor=next_cursor)


def _keyset_order(ordering: str | None) -> tuple[str, bool]:
    """(field, descending) of a keyset list's `ordering`, checked."""
    field = (ordering or "-created_at").strip()
    descending = field.startswith("-")
    field = field.lstrip("-+")
    if field not in ORDERABLE:
        raise ValidationFailed(
            f"cannot order by {field!r}",
            details=[field_error("ordering", f"one of {', '.join(sorted(ORDERABLE))}")],
        )
    return field, descending


def _keyset_ordered(qs: QuerySet, field: str, descending: bool) -> QuerySet:
    id_order = "-id" if descending else "id"
    if field == "created_at":
        return qs.order_by(id_order)  # a UUIDv7 id orders like created_at
    nulls = {"nulls_last": True} if field in NULLABLE else {}
    return qs.order_by(F(field).desc(**nulls) if descending else F(field).asc(**nulls), id_order)


def execution_first_page_counted(qs: QuerySet, *, ordering: str | None, limit: int) -> Page | None:
    """execution_page_ordered's first page (no cursor) with its count, for a list marked
    one_pass_count (a metadata filter): its matches are read once for both (the dashboard read
    them twice, page then count: 5-12 ms each for one tenant at 1M runs). None when that cannot
    answer (not marked, an order it cannot spell): the page and count_capped the usual way."""
    if not getattr(qs.query, ONE_PASS, False):
        return None
    field, descending = _keyset_order(ordering)
    ordered = _keyset_ordered(qs, field, descending)
    counted = _one_pass_page(ordered, 0, limit + 1)
    if counted is None:
        if _order_columns(ordered) is None:
            return None
        return Page(items=[], total=0, page=1, limit=limit)  # from the start, nothing matched
    rows, total = counted
    if rows is None:  # more matches than the cap: the page alone, the count known capped
        page = execution_page_ordered(qs, ordering=ordering, cursor=None, limit=limit)
        page.total, page.exact = COUNT_CAP, False
        return page
    more, rows = len(rows) > limit, rows[:limit]
    next_cursor = None
    if more and field == "created_at":
        next_cursor = encode_cursor(rows[-1])
    elif more:
        next_cursor = _encode_value_cursor(getattr(rows[-1], field), rows[-1].pk)
    return Page(items=rows, total=total, page=1, limit=limit, next_cursor=next_cursor)


def execution_page_ordered(
    qs: QuerySet, *, ordering: str | None, cursor: str | None, limit: int
) -> Page:
    """Keyset page in any ORDERABLE order: the cursor carries (value, id) of the last row, so a
    deep page costs the same as the first (no OFFSET, no COUNT). NULLs sort last either way."""
    field, descending = _keyset_order(ordering)
    if field == "created_at":
        return keyset_page(qs, cursor=cursor, limit=limit, descending=descending)
    qs = _keyset_ordered(qs, field, descending)
    if cursor:
        value, anchor = _decode_value_cursor(cursor)
        beyond = "lt" if descending else "gt"
        if value is None:
            qs = qs.filter(**{f"{field}__isnull": True, f"pk__{beyond}": anchor})
        else:
            qs = qs.filter(
                Q(**{f"{field}__{beyond}": value})
                | Q(**{field: value, f"pk__{beyond}": anchor})
                | Q(**{f"{field}__isnull": True})
            )
    rows = list(qs[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_value_cursor(getattr(rows[-1], field), rows[-1].pk) if more else None
    return Page(items=rows, total=None, page=1, limit=limit, next_cursor=next_cursor)


def _encode_value_cursor(value: Any, pk: Any) -> str:
    raw = json.dumps(
        [
            value.isoformat()
            if hasattr(value, "isoformat")
            else str(value)
            if value is not None
            else None,
            str(pk),
        ]
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_value_cursor(cursor: str) -> tuple[Any, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value, pk = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        return value, uuid.UUID(pk)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise BadRequest("cursor is not valid", details={"field": "cursor"}) from None
