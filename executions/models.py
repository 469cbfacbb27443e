"""The execution record and the tenancy around it (DESIGN.md §4).

Status is never written here: `executions.lifecycle.transition()` is its only writer.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import timedelta

import uuid_utils
from django.conf import settings
from django.db import models
from django.utils import timezone


def new_id() -> uuid.UUID:
    """A UUIDv7: time-ordered, so primary-key order is creation order and indexes stay hot."""
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    REVIEWER = "reviewer", "Reviewer"
    ADMIN = "admin", "Admin"


ROLE_RANK = {Role.VIEWER: 0, Role.REVIEWER: 1, Role.ADMIN: 2}


def role_at_least(role: str, minimum: str) -> bool:
    return ROLE_RANK.get(role, -1) >= ROLE_RANK[minimum]


class Workspace(models.Model):
    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=64, unique=True)
    retention_days = models.PositiveIntegerField(default=30)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "workspace"], name="membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} ({self.role})"


class ApiKeyQuerySet(models.QuerySet):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """A workspace-scoped key. The secret is shown once and only its SHA-256 is kept."""

    PREFIX = "stw"
    # last_used_at is refreshed at most this often, so auth does not write on every request.
    TOUCH_EVERY = timedelta(seconds=60)

    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=120)
    prefix = models.CharField(max_length=32, unique=True)
    secret_hash = models.CharField(max_length=64)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ADMIN)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash_secret(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def generate(cls) -> tuple[str, str]:
        """Return (prefix, full key). The prefix is the public, indexed part of the key."""
        prefix = f"{cls.PREFIX}_{secrets.token_hex(4)}"
        return prefix, f"{prefix}_{secrets.token_urlsafe(32)}"

    def matches(self, raw: str) -> bool:
        return hmac.compare_digest(self.secret_hash, self.hash_secret(raw))

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class AgentType(models.TextChoices):
    AGENT = "agent", "Agent"
    WORKFLOW = "workflow", "Workflow"
    PYTHON = "python", "Python"
    EXTERNAL = "external", "External"


class AgentQuerySet(models.QuerySet):
    def for_workspace(self, workspace: Workspace) -> AgentQuerySet:
        return self.filter(workspace=workspace, deleted_at__isnull=True)


class Agent(models.Model):
    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    type = models.CharField(max_length=16, choices=AgentType.choices, default=AgentType.AGENT)
    current_version = models.ForeignKey(
        "AgentVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = AgentQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "name"],
                condition=models.Q(deleted_at__isnull=True),
                name="agent_name_unique_live",
            )
        ]
        indexes = [models.Index(fields=["workspace", "created_at"], name="agent_ws_created")]

    def __str__(self) -> str:
        return self.name


class AgentVersion(models.Model):
    """One immutable definition of an agent. Executions pin the version they ran."""

    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    version = models.CharField(max_length=64)
    message = models.TextField(blank=True, default="")
    config = models.JSONField(default=dict, blank=True)
    input_schema = models.JSONField(null=True, blank=True)
    output_schema = models.JSONField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "number"], name="agentversion_number_unique"),
            models.UniqueConstraint(fields=["agent", "version"], name="agentversion_label_unique"),
        ]
        ordering = ["agent", "-number"]

    def __str__(self) -> str:
        return f"{self.agent.name}@{self.version}"


class ExecutionQuerySet(models.QuerySet):
    def for_workspace(self, workspace: Workspace) -> ExecutionQuerySet:
        return self.filter(workspace=workspace)


# The statuses an execution never leaves. executions.lifecycle owns the statuses and their moves
# (its TERMINAL is this set); it lives here so the model's own invariant needs no upward import.
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "rejected"})


class Execution(models.Model):
    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    # Each create and status change writes every index here, so a foreign key gets none where
    # another serves: workspace leads the composites below, and the mostly-NULL ones are
    # indexed only where set (docs/decisions.md, "An index … must earn its write").
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="executions", db_index=False
    )
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="executions")
    agent_version = models.ForeignKey(
        AgentVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="executions"
    )
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="children",
        db_index=False,
    )
    retry_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retries",
        db_index=False,
    )
    session_id = models.CharField(max_length=200, blank=True, default="")
    # Written only by lifecycle.transition().
    status = models.CharField(max_length=24, default="pending", editable=False)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    token_usage = models.JSONField(default=dict, blank=True)
    # NULL means "unknown" (a model without a published price), never "free".
    cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    duration_ms = models.BigIntegerField(null=True, blank=True)
    trace_id = models.CharField(max_length=64, blank=True, default="")
    transition_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    request_hash = models.CharField(max_length=64, blank=True, default="")
    created_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_index=False,
    )
    created_by_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, db_index=False
    )
    # Engine bookkeeping: the durable state between steps, the lease, and cancel requests.
    state = models.JSONField(default=dict, blank=True)
    lease_owner = models.CharField(max_length=120, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # The run queue (engine/queue.py): a pending or running execution is runnable once this
    # time has come and its lease is free or expired. NULL: waiting on something else (a
    # child run, or an external system that reports the run's progress itself).
    runnable_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    objects = ExecutionQuerySet.as_manager()

    class Meta:
        indexes = [
            # Lists order by id (a UUIDv7, so created order) newest first: each common filter
            # has an index ending in id, so a page is an index range read in order, no sort.
            models.Index(fields=["workspace", "status", "id"], name="exec_ws_status_id"),
            models.Index(fields=["workspace", "agent", "id"], name="exec_ws_agent_id"),
            models.Index(
                fields=["workspace", "agent", "status", "id"], name="exec_ws_agent_status"
            ),
            models.Index(fields=["workspace", "session_id"], name="exec_ws_session"),
            models.Index(fields=["workspace", "created_at"], name="exec_ws_created"),
            models.Index(fields=["workspace", "updated_at", "id"], name="exec_ws_updated"),
            # The nullable orderings (cost, duration, started, completed) sort NULLs last in
            # both directions; PostgreSQL gets `DESC NULLS LAST` indexes for them, and the
            # metadata GIN index, in migration 0004 (SQLite has neither).
            # The mostly-NULL foreign keys, for the lookups a delete makes (a parent's
            # children, a revoked key's or a removed user's runs): only the rows that have one.
            *(
                models.Index(
                    fields=[field],
                    name=f"exec_{field}_set",
                    condition=models.Q(**{f"{field}__isnull": False}),
                )
                for field in ("parent", "retry_of", "created_by_user", "created_by_key")
            ),
            # Only live rows are in it, so a claim stays cheap however long the history grows.
            models.Index(
                fields=["runnable_at", "lease_expires_at"],
                name="exec_runnable",
                condition=models.Q(status__in=["pending", "running"], runnable_at__isnull=False),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="exec_idempotency_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_simulated(self) -> bool:
        version = self.agent_version
        return bool(
            version
            and (version.config or {}).get("model", {}).get("provider", "builtin") == "builtin"
            and self.agent.type in {AgentType.AGENT, AgentType.WORKFLOW}
        )


class ExecutionTombstone(models.Model):
    """What is left of an execution purged by retention, so a read can say it expired."""

    id = models.UUIDField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    purged_at = models.DateTimeField(default=timezone.now)


class ActorType(models.TextChoices):
    USER = "user", "User"
    API_KEY = "api_key", "API key"
    SYSTEM = "system", "System"


class Transition(models.Model):
    """Append-only history of one execution; the timeline, traces and Julep transitions read it."""

    id = models.BigAutoField(primary_key=True)
    # No index of its own: the unique (execution, seq) index serves every lookup by execution.
    execution = models.ForeignKey(
        Execution, on_delete=models.CASCADE, related_name="transitions", db_index=False
    )
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=24)
    from_status = models.CharField(max_length=24, blank=True, default="")
    to_status = models.CharField(max_length=24, blank=True, default="")
    step_path = models.CharField(max_length=200, blank=True, default="")
    step_kind = models.CharField(max_length=32, blank=True, default="")
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    usage = models.JSONField(null=True, blank=True)
    cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    message = models.TextField(blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices, default="system")
    # Most transitions are the system's (NULL here): the indexes hold only the rows that name a
    # user or key, which is all that deleting one needs.
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_index=False,
    )
    actor_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, db_index=False
    )
    actor_label = models.CharField(max_length=200, blank=True, default="system")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["execution", "seq"], name="transition_seq_unique")
        ]
        indexes = [
            models.Index(
                fields=["actor_user"],
                name="transition_actor_user",
                condition=models.Q(actor_user__isnull=False),
            ),
            models.Index(
                fields=["actor_key"],
                name="transition_actor_key",
                condition=models.Q(actor_key__isnull=False),
            ),
        ]
        ordering = ["execution", "seq"]

    def __str__(self) -> str:
        return f"{self.execution_id}#{self.seq} {self.type}"


class ExecutionEvent(models.Model):
    """Streamed events of a run (content chunks, tool start/end…), kept for late subscribers."""

    id = models.BigAutoField(primary_key=True)
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="events")
    run = models.PositiveIntegerField(default=1)
    type = models.CharField(max_length=24)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["execution", "id"], name="execevent_exec_id")]


class SavedView(models.Model):
    """A named set of list filters, shared with the workspace."""

    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="saved_views")
    name = models.CharField(max_length=120)
    query = models.CharField(max_length=2000)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]


class DemoOrder(models.Model):
    """A small shop table for the demo tools (order lookup and refund); refunds are counted so
    tests can prove a tool's side effect happened exactly once."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(
        Workspace, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    order_id = models.CharField(max_length=64)
    customer = models.CharField(max_length=200, blank=True, default="")
    item = models.CharField(max_length=200, blank=True, default="")
    total = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    refunded = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    refund_count = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=24, default="paid")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "order_id"], name="demoorder_unique")
        ]

    def __str__(self) -> str:
        return self.order_id


class ExecutionRollup(models.Model):
    """Finished executions counted per (workspace, agent, status, hour created), so stats and
    the overview read a few hundred rows instead of scanning the history. Written only by the
    execution lifecycle, in the transaction that ends the run (and subtracted by retention);
    unfinished runs are few and counted live. `shard` spreads one busy agent's hour over a few
    rows so concurrent endings do not queue on one row lock."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=24)
    hour = models.DateTimeField()
    shard = models.PositiveSmallIntegerField(default=0)
    count = models.BigIntegerField(default=0)
    # Executions with a known cost above zero, and the sum of their costs.
    costed = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    duration_ms = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "hour", "agent", "status", "shard"], name="rollup_unique"
            )
        ]


class DurationRollup(models.Model):
    """Finished executions' durations counted per (workspace, agent, day created, bucket), so
    the overview's per-agent percentiles read a few thousand small rows instead of each agent's
    latest runs. Buckets are log-linear (8 per doubling, `rollups.duration_bucket`): a
    percentile read from them is within 1/8 of the exact one. Written with ExecutionRollup by
    the lifecycle, in the transaction that ends the run (and subtracted by retention); `shard`
    as there."""

    id = models.BigAutoField(primary_key=True)
    # The unique index below leads with the workspace: no index of its own (a write cost).
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()  # the UTC date the run was created
    bucket = models.PositiveSmallIntegerField()
    shard = models.PositiveSmallIntegerField(default=0)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "day", "agent", "bucket", "shard"],
                name="duration_rollup_unique",
            )
        ]
