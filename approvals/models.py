"""Human checkpoints (DESIGN.md §4): what is asked, who may answer, and what they answered."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from executions.models import ApiKey, Execution, Workspace, new_id


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled"


class ApprovalQuerySet(models.QuerySet):
    def for_workspace(self, workspace: Workspace) -> ApprovalQuerySet:
        return self.filter(workspace=workspace)

    def pending(self) -> ApprovalQuerySet:
        return self.filter(status=ApprovalStatus.PENDING)


class Approval(models.Model):
    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="approvals")
    execution = models.ForeignKey(
        Execution, null=True, blank=True, on_delete=models.CASCADE, related_name="approvals"
    )
    step_path = models.CharField(max_length=200, blank=True, default="")
    # What created it: a workflow step, a tool call, a Python agent, or an external program.
    source = models.CharField(max_length=16, default="step")
    title = models.CharField(max_length=300)
    description = models.TextField(blank=True, default="")  # Markdown, rendered sanitised
    payload = models.JSONField(null=True, blank=True)
    payload_schema = models.JSONField(null=True, blank=True)
    allowed_actions = models.JSONField(default=list)  # approve, reject, edit, respond
    options = models.JSONField(null=True, blank=True)  # [{"value","label"}]
    multiple = models.BooleanField(default=False)  # several options may be chosen
    response_schema = models.JSONField(null=True, blank=True)
    assignee_users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="assigned_approvals"
    )
    assignee_roles = models.JSONField(default=list, blank=True)
    forbid_self_approval = models.BooleanField(default=False)
    required_approvals = models.PositiveIntegerField(default=1)
    # How many distinct rejections resolve it as rejected (1: any reject ends it).
    required_rejections = models.PositiveIntegerField(default=1)
    # True: a rejection ends the execution as `rejected`; false: the run goes on (on_reject).
    reject_ends = models.BooleanField(default=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    on_timeout = models.CharField(max_length=16, default="reject")  # approve | reject | fail
    escalate_at = models.DateTimeField(null=True, blank=True)
    escalate_to_users = models.JSONField(default=list, blank=True)
    escalate_to_roles = models.JSONField(default=list, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    # When the assignees were first told (e-mail / webhooks), so a re-run never re-notifies.
    notified_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(
        max_length=16, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING
    )
    result_payload = models.JSONField(null=True, blank=True)  # approved (possibly edited)
    response = models.JSONField(null=True, blank=True)
    chosen_options = models.JSONField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by_label = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = ApprovalQuerySet.as_manager()

    class Meta:
        indexes = [
            # The list's order (soonest due, NULLs last as an ASC index keeps them, then
            # oldest): with and without a status filter, read in index order.
            models.Index(
                fields=["workspace", "status", "expires_at", "created_at", "id"],
                name="approval_ws_status_order",
            ),
            models.Index(
                fields=["workspace", "expires_at", "created_at", "id"], name="approval_ws_order"
            ),
            models.Index(fields=["workspace", "created_at"], name="approval_ws_created"),
            # The inbox's "decided" tab: the latest change first, keyset on (updated_at, id).
            models.Index(fields=["workspace", "updated_at", "id"], name="approval_ws_updated"),
            models.Index(fields=["status", "expires_at"], name="approval_status_due"),
            models.Index(fields=["status", "escalate_at"], name="approval_status_escalate"),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.title} ({self.status})"


class ApprovalDecision(models.Model):
    id = models.BigAutoField(primary_key=True)
    approval = models.ForeignKey(Approval, on_delete=models.CASCADE, related_name="decisions")
    decision = models.CharField(max_length=16)  # approve | reject | edit | respond | expire
    reason = models.TextField(blank=True, default="")
    payload = models.JSONField(null=True, blank=True)  # edited payload
    response = models.JSONField(null=True, blank=True)
    options = models.JSONField(null=True, blank=True)
    actor_type = models.CharField(max_length=16, default="user")
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL)
    actor_label = models.CharField(max_length=200, default="")
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["approval", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="decision_idempotency_unique",
            )
        ]


class ApprovalComment(models.Model):
    id = models.BigAutoField(primary_key=True)
    approval = models.ForeignKey(Approval, on_delete=models.CASCADE, related_name="comments")
    body = models.TextField()
    actor_type = models.CharField(max_length=16, default="user")
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL)
    actor_label = models.CharField(max_length=200, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]


class Webhook(models.Model):
    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=1000)
    events = models.JSONField(default=list)  # ["execution.completed", …] or ["*"]
    secret = models.CharField(max_length=100)
    active = models.BooleanField(default=True)
    description = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]


class WebhookDelivery(models.Model):
    id = models.UUIDField(primary_key=True, default=new_id, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=64)
    payload = models.JSONField()
    attempts = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, default="pending")  # pending|delivered|failed
    last_status_code = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["webhook", "created_at"], name="delivery_hook_created")]


class DeliveryAttempt(models.Model):
    id = models.BigAutoField(primary_key=True)
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="log")
    status_code = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    duration_ms = models.IntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
