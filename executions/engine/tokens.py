"""A due-now wake-up token that carries its run (engine/wakeup.py's tokens, DESIGN.md §6).

An idle run's latency was mostly round trips: the start's commit, the wake-up, then the claim
(a statement that leases the row and reads it back), then the end. A fresh start knows its
whole row already, so its token carries it: the worker that takes the token computes the run's
pure steps from it and writes its end as ONE compare-and-set from "pending, unleased, as
created" (batch.run_token) — no claim, one statement fewer (docs/decisions.md, "Engine").

The row in Redis is a copy, never the truth: the compare-and-set is on the row's status, its
history length and its free lease, so a copy that is stale (a comment landed, a worker claimed
it, it was cancelled) writes nothing, and the run is claimed from the table as any other. A
token that cannot be read (too large, another version's columns) is a plain wake-up.

Only JSON goes through Redis (never pickle: a Redis an attacker can write to must not run code
in the workers), signed with the deployment's SECRET_KEY (a forged or altered row — another
input for a real execution — is read as a plain wake-up, never computed), and only small
rows: an input of a megabyte stays in the database and the run is claimed.
"""

from __future__ import annotations

import hmac
import json
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone
from django.utils.crypto import salted_hmac

from executions.engine.wakeup import TOKEN_WAKE as WAKE
from executions.lifecycle import Status
from executions.models import AgentType, Execution

# A run's row travels in its token up to this size; larger ones are claimed.
MAX_TOKEN_BYTES = 8192
_FIELDS = Execution._meta.concrete_fields
_ATTNAMES = [field.attname for field in _FIELDS]
# Written in each token: a worker of another version (other columns) treats it as a wake-up.
_SHAPE = ",".join(_ATTNAMES)
_AGENT = Execution._meta.get_field("agent")
_SALT = "steward.engine.tokens"


def token_of(execution: Execution) -> bytes:
    """The wake-up token for a start just committed: its row, when a worker could run it to its
    end from the token alone (a workflow's fresh top-level run, due now, small); else WAKE."""
    if (
        not _AGENT.is_cached(execution)  # its type unknown without a query: not worth one
        or execution.agent.type != AgentType.WORKFLOW  # an agent starts with a model call
        or execution.status != Status.PENDING
        or execution.parent_id is not None  # its end wakes its parent: a write of its own
        or execution.runnable_at is None
        or execution.runnable_at > timezone.now()
    ):
        return WAKE
    row = [getattr(execution, name) for name in _ATTNAMES]
    try:
        data = json.dumps({"shape": _SHAPE, "row": row}, default=_plain, separators=(",", ":"))
    except (TypeError, ValueError):
        return WAKE
    encoded = data.encode()
    if len(encoded) > MAX_TOKEN_BYTES:
        return WAKE
    return _sign(encoded) + b"." + encoded


def run_of(token: bytes) -> Execution | None:
    """The row a token carries, as the claim would have built it (unleased), or None."""
    mac, _, encoded = token.partition(b".")
    if not encoded or not hmac.compare_digest(mac, _sign(encoded)):
        return None  # WAKE, or not signed by this deployment
    try:
        data = json.loads(encoded)
        if data.get("shape") != _SHAPE or len(data["row"]) != len(_FIELDS):
            return None
        values = [field.to_python(value) for field, value in zip(_FIELDS, data["row"], strict=True)]
    except (ValueError, TypeError, KeyError, AttributeError, ValidationError):
        return None
    return Execution.from_db(DEFAULT_DB_ALIAS, _ATTNAMES, values)


def _sign(encoded: bytes) -> bytes:
    return salted_hmac(_SALT, encoded, algorithm="sha256").hexdigest().encode()


def _plain(value: Any) -> Any:
    """JSON for the column types of a row (full precision: a datetime keeps its microseconds)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")
