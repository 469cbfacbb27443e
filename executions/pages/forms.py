"""The dashboard's small forms (settings, saved views, decisions, cancel), as Django forms.

They check shape (present, the right type, one of the choices); the rules of the domain (a
unique key name, the last admin, a decision the approval allows) stay in the services, whose
`ValidationFailed` details `add_service_errors` puts back on the fields they name. Forms generated
from a JSON Schema (Run, Resume, Respond, Edit payload) are `executions.forms.SchemaForm`.
"""

from __future__ import annotations

from typing import Any

from django import forms

from executions.errors import StewardError
from executions.models import Role


def add_service_errors(form: forms.Form, exc: StewardError) -> None:
    """A service's refusal shown on the form: on the field it names, else above the form."""
    details = getattr(exc, "details", None) or []
    if not details:
        form.add_error(None, exc.message)
        return
    for problem in details:
        name = str(problem.get("field", "")).split(".")[0].split("[")[0]
        form.add_error(name if name in form.fields else None, problem["message"])


def first_error(form: forms.Form) -> str:
    """One line naming the field, for the page's error banner."""
    for name, errors in form.errors.items():
        label = "" if name == "__all__" else f"{form.fields[name].label or name}: "
        return f"{label}{errors[0]}"
    return ""


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=120, strip=True)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.REVIEWER)


class ApiKeyRevokeForm(forms.Form):
    prefix = forms.CharField(max_length=32)


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150, strip=True)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)
    password = forms.CharField(required=False, strip=False)
    email = forms.EmailField(required=False)


class MemberChangeForm(forms.Form):
    """Change a member's role, or remove them (`action` says which)."""

    user_id = forms.IntegerField(label="Member")
    role = forms.ChoiceField(choices=Role.choices, required=False)


class RetentionForm(forms.Form):
    # The range is the service's rule (and its message); the form only wants a whole number.
    retention_days = forms.IntegerField(label="Retention (days)")


class WebhookCreateForm(forms.Form):
    url = forms.URLField(label="URL", assume_scheme="https")
    description = forms.CharField(max_length=200, required=False)
    events = forms.MultipleChoiceField(required=False)

    def __init__(self, *args: Any, events: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["events"].choices = [("*", "Everything"), *[(e, e) for e in events]]

    def clean_events(self) -> list[str]:
        return self.cleaned_data["events"] or ["*"]


class WebhookActionForm(forms.Form):
    ACTIONS = ("delete", "toggle", "ping", "redeliver")

    action = forms.ChoiceField(choices=[(a, a) for a in ACTIONS])
    webhook_id = forms.UUIDField(label="Webhook")
    delivery_id = forms.UUIDField(label="Delivery", required=False)


class SavedViewForm(forms.Form):
    name = forms.CharField(max_length=120, required=False)
    query = forms.CharField(required=False, strip=True)


class ReasonForm(forms.Form):
    """Cancel an execution, comment on an approval: one optional free-text reason."""

    reason = forms.CharField(required=False, max_length=2000, strip=True)


class CommentForm(forms.Form):
    body = forms.CharField(required=False, max_length=10_000, strip=True)


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(
        choices=[(d, d) for d in ("approve", "reject", "edit", "respond")],
        error_messages={"invalid_choice": "choose approve, reject, edit or respond"},
    )
    reason = forms.CharField(required=False, max_length=2000, strip=True)
    option = forms.MultipleChoiceField(required=False)
    idempotency_key = forms.CharField(required=False, max_length=200)
    # How an edit was made: the fields generated from the payload schema, or the JSON editor.
    edit_mode = forms.ChoiceField(choices=[("fields", "fields"), ("json", "json")], required=False)
    payload = forms.CharField(required=False, strip=False)
    response_text = forms.CharField(required=False, strip=True)
    context_page = forms.CharField(required=False)

    def __init__(self, *args: Any, options: list[dict] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["option"].choices = [
            (str(o.get("value")), str(o.get("label") or o.get("value"))) for o in options or []
        ]


class BulkDecisionForm(forms.Form):
    decision = forms.ChoiceField(
        choices=[("approve", "approve"), ("reject", "reject")],
        error_messages={
            "invalid_choice": "Choose approve or reject.",
            "required": "Choose approve or reject.",
        },
    )
    ids = forms.MultipleChoiceField(required=False)
    reason = forms.CharField(required=False, max_length=2000, strip=True)
    tab = forms.CharField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Any id is accepted here; the service reports the ones it cannot find, one by one.
        self.fields["ids"].valid_value = lambda value: True


class RunOptionsForm(forms.Form):
    """What the Run form sends beside the agent's input."""

    session_id = forms.CharField(required=False, max_length=200, strip=True)


class WorkspaceSwitchForm(forms.Form):
    workspace = forms.UUIDField()
