"""PostgreSQL-only: the least-first direction of the nullable orderings (cost, duration,
started, completed). Lists sort NULLs last both ways; the `DESC NULLS LAST` indexes of 0004 read
backwards give NULLs first, so ascending needs its own `ASC NULLS LAST` index or it sorts the
whole workspace (a top-N sort of ~330k rows on the 1M dataset). SQLite has no NULLS LAST index
and sorts in memory either way."""

from django.db import migrations

ORDERED = ("cost", "duration_ms", "started_at", "completed_at")


def create_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = apps.get_model("executions", "Execution")._meta.db_table
    for column in ORDERED:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS exec_ws_{column}_asc ON {table} "
            f"(workspace_id, {column} ASC NULLS LAST, id ASC)"
        )


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for column in ORDERED:
        schema_editor.execute(f"DROP INDEX IF EXISTS exec_ws_{column}_asc")


class Migration(migrations.Migration):
    # Built inside the migration's transaction (writes to the table wait meanwhile); on a large
    # history run it in a quiet moment, or create the indexes CONCURRENTLY by hand first (the
    # IF NOT EXISTS then skips them).
    dependencies = [("executions", "0005_postgres_trace_prefix_index")]

    operations = [migrations.RunPython(create_indexes, drop_indexes)]
