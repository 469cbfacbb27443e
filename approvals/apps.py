from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from approvals import notifications
        from executions.live import events

        # Webhooks and e-mails hang off committed transitions (executions never import us).
        events.add_listener(notifications.on_transition)
