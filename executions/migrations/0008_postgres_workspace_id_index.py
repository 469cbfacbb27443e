"""PostgreSQL-only: (workspace_id, id), so a workspace's runs in created order (UUIDv7 ids) are
one index range. The default list (newest first) walked the primary key backwards and read
every run's heap row to keep the workspace's third (30,000 rows for page 500 at 1M); with this
index a deep page's OFFSET is an index-only walk and only the page's 20 rows are read
(pagination.paginate's deferred join). SQLite keeps the model's indexes."""

from django.db import migrations

INDEX = "exec_ws_id"


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = apps.get_model("executions", "Execution")._meta.db_table
    schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON {table} (workspace_id, id)")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("executions", "0007_postgres_agent_index_covers_duration")]

    operations = [migrations.RunPython(create, drop)]
