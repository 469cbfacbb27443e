from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "executions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Python agents register themselves with @agent when their module is imported; in
        # ready(), since the registry reads settings and models.
        from executions.engine import python_agents

        python_agents.autodiscover()
