"""PostgreSQL-only: `q` matches the start of a trace id with LIKE 'prefix%', which a plain
btree cannot serve under a non-C collation; a varchar_pattern_ops index can. trace_id never
changes after insert, so the index costs nothing on the status updates."""

from django.db import migrations


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = apps.get_model("executions", "Execution")._meta.db_table
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS exec_ws_trace_prefix ON {table} "
        "(workspace_id, trace_id varchar_pattern_ops)"
    )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS exec_ws_trace_prefix")


class Migration(migrations.Migration):
    dependencies = [("executions", "0004_postgres_scale_indexes")]

    operations = [migrations.RunPython(create_index, drop_index)]
