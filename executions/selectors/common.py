"""Parsing shared by the selectors: ids and dates from query parameters."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from executions.errors import NotFound, field_error


def parse_uuid(value: Any, *, field: str, what: str = "object") -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        raise NotFound(f"{what} {value} not found", details={"field": field}) from None


def parse_dt(value: Any, field: str, errors: list) -> datetime | None:
    if value in (None, ""):
        return None
    text = str(value).strip().replace(" ", "+") if "T" in str(value) else str(value).strip()
    try:
        parsed = parse_datetime(text)
        if parsed is None and (day := parse_date(text)) is not None:
            parsed = datetime(day.year, day.month, day.day)
    except ValueError:
        parsed = None
    if parsed is None:
        errors.append(field_error(field, "must be an ISO-8601 date or datetime"))
        return None
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, timezone.UTC)
    return parsed
