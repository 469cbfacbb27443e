"""Fewer indexes on the execution table, whose every index is written by each create and each
status change: the plain workspace_id index goes (every composite index starts with the
workspace), and the mostly-NULL foreign keys (parent, retry_of, created_by_user,
created_by_key) keep an index only over the rows that have one — what a delete's lookup of a
parent's children or of a revoked key's runs needs.

The state says db_index=False plus four partial indexes; the database only drops and creates
indexes. Altering the fields the usual way would re-validate five foreign keys over the whole
table on PostgreSQL and copy the table five times on SQLite. On PostgreSQL the indexes are
dropped and built CONCURRENTLY, so the table stays writable (hence not atomic)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

DROPPED = [
    "executions_execution_workspace_id_15b28d9b",
    "executions_execution_parent_id_01d36e73",
    "executions_execution_retry_of_id_879878fb",
    "executions_execution_created_by_user_id_bae95ebd",
    "executions_execution_created_by_key_id_eddaef84",
]
PARTIAL = {
    "exec_parent_set": "parent_id",
    "exec_retry_of_set": "retry_of_id",
    "exec_created_by_user_set": "created_by_user_id",
    "exec_created_by_key_set": "created_by_key_id",
}
TABLE = "executions_execution"


def _concurrently(schema_editor) -> str:
    return " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""


def forwards(apps, schema_editor):
    how = _concurrently(schema_editor)
    for name, column in PARTIAL.items():
        schema_editor.execute(
            f'CREATE INDEX{how} IF NOT EXISTS "{name}" ON "{TABLE}" ("{column}")'
            f' WHERE "{column}" IS NOT NULL'
        )
    for name in DROPPED:
        schema_editor.execute(f'DROP INDEX{how} IF EXISTS "{name}"')


def backwards(apps, schema_editor):
    how = _concurrently(schema_editor)
    for name in DROPPED:
        column = name.removeprefix(f"{TABLE}_").rsplit("_", 1)[0]
        schema_editor.execute(f'CREATE INDEX{how} IF NOT EXISTS "{name}" ON "{TABLE}" ("{column}")')
    for name in PARTIAL:
        schema_editor.execute(f'DROP INDEX{how} IF EXISTS "{name}"')


def _fk(to, **extra):
    return models.ForeignKey(db_index=False, to=to, **extra)


NULLABLE = {"blank": True, "null": True}


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("executions", "0010_duration_rollup"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards)],
            state_operations=[
                migrations.AlterField(
                    model_name="execution",
                    name="created_by_key",
                    field=_fk(
                        "executions.apikey",
                        on_delete=django.db.models.deletion.SET_NULL,
                        **NULLABLE,
                    ),
                ),
                migrations.AlterField(
                    model_name="execution",
                    name="created_by_user",
                    field=_fk(
                        settings.AUTH_USER_MODEL,
                        on_delete=django.db.models.deletion.SET_NULL,
                        **NULLABLE,
                    ),
                ),
                migrations.AlterField(
                    model_name="execution",
                    name="parent",
                    field=_fk(
                        "executions.execution",
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="children",
                        **NULLABLE,
                    ),
                ),
                migrations.AlterField(
                    model_name="execution",
                    name="retry_of",
                    field=_fk(
                        "executions.execution",
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="retries",
                        **NULLABLE,
                    ),
                ),
                migrations.AlterField(
                    model_name="execution",
                    name="workspace",
                    field=_fk(
                        "executions.workspace",
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="executions",
                    ),
                ),
                *(
                    migrations.AddIndex(
                        model_name="execution",
                        index=models.Index(
                            condition=models.Q((f"{column.removesuffix('_id')}__isnull", False)),
                            fields=[column.removesuffix("_id")],
                            name=name,
                        ),
                    )
                    for name, column in PARTIAL.items()
                ),
            ],
        )
    ]
