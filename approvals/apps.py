from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at the top: models must be loaded before these modules import them.
        from approvals import lifecycle as approval_lifecycle
        from approvals import notifications
        from executions import lifecycle
        from executions.live import events

        # Webhooks and e-mails hang off committed transitions (executions never import us).
        events.add_listener(notifications.on_transition)
        # An execution that ends closes its open approvals through the approvals lifecycle.
        lifecycle.on_end(approval_lifecycle.close_for_execution)
