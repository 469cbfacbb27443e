"""PostgreSQL-only indexes, and the rollup filled from the executions that already ended.

- `DESC NULLS LAST` orderings: lists sort the nullable columns (cost, duration, started,
  completed) with NULLs last in both directions; a plain index read backwards gives NULLs first,
  so the newest-first direction gets an index of its own. SQLite cannot declare NULLS LAST in an
  index.
- `metadata` GIN (jsonb_path_ops): serves the `@>` containment the metadata filter adds on
  PostgreSQL (executions.selectors.filters).
"""

from django.db import migrations
from django.db.models import Count, DecimalField, Q, Sum, Value
from django.db.models.functions import Coalesce, TruncHour

ORDERED = ("cost", "duration_ms", "started_at", "completed_at")
TERMINAL = ("completed", "failed", "cancelled", "rejected")


def create_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = apps.get_model("executions", "Execution")._meta.db_table
    for column in ORDERED:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS exec_ws_{column}_desc ON {table} "
            f"(workspace_id, {column} DESC NULLS LAST, id DESC)"
        )
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS exec_metadata_gin ON {table} "
        "USING gin (metadata jsonb_path_ops)"
    )


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in [f"exec_ws_{column}_desc" for column in ORDERED] + ["exec_metadata_gin"]:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


def fill_rollup(apps, schema_editor):
    Execution = apps.get_model("executions", "Execution")
    ExecutionRollup = apps.get_model("executions", "ExecutionRollup")
    rows = (
        Execution.objects.filter(status__in=TERMINAL)
        .annotate(bucket=TruncHour("created_at"))
        .values("workspace_id", "agent_id", "status", "bucket")
        .annotate(
            n=Count("id"),
            costed=Count("id", filter=Q(cost__gt=0)),
            total=Coalesce(Sum("cost"), Value(0, output_field=DecimalField())),
            ms=Coalesce(Sum("duration_ms"), 0),
        )
        .order_by()
    )
    ExecutionRollup.objects.bulk_create(
        (
            ExecutionRollup(
                workspace_id=row["workspace_id"],
                agent_id=row["agent_id"],
                status=row["status"],
                hour=row["bucket"],
                count=row["n"],
                costed=row["costed"],
                cost=row["total"],
                duration_ms=row["ms"],
            )
            for row in rows.iterator()
        ),
        batch_size=1000,
    )


class Migration(migrations.Migration):
    # The GIN and ordering indexes are built inside the migration's transaction; on a large
    # table run it in a quiet moment (CREATE INDEX CONCURRENTLY cannot run in a transaction).
    dependencies = [("executions", "0003_scale_indexes_and_rollup")]

    operations = [
        migrations.RunPython(create_indexes, drop_indexes),
        migrations.RunPython(fill_rollup, migrations.RunPython.noop),
    ]
