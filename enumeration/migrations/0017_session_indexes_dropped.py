import django.db.models.deletion
from django.db import migrations, models

# The ForeignKeys' own indexes on batch.session_id and task.session_id, which the unique key
# (session_id, unit_hash) and the index (session_id, kind, status) make redundant: every
# directory listed and every task made paid for one more index entry. Only the indexes go;
# AlterField's own operations would also drop and re-add the foreign keys, and re-adding one
# checks every row of its table under lock.


def _index_dropped(
    model: str, related_name: str, table: str, index: str
) -> migrations.SeparateDatabaseAndState:
    return migrations.SeparateDatabaseAndState(
        state_operations=[
            migrations.AlterField(
                model_name=model,
                name="session",
                field=models.ForeignKey(
                    db_index=False,
                    on_delete=django.db.models.deletion.CASCADE,
                    related_name=related_name,
                    to="enumeration.sessionstate",
                ),
            ),
        ],
        database_operations=[
            migrations.RunSQL(
                f'DROP INDEX IF EXISTS "{index}"',
                reverse_sql=f'CREATE INDEX "{index}" ON "{table}" ("session_id")',
            ),
        ],
    )


class Migration(migrations.Migration):
    dependencies = [
        ("enumeration", "0016_domain_event_claims"),
    ]

    operations = [
        _index_dropped(
            "batch", "batches", "enumeration_batch", "enumeration_batch_session_id_d58098e9"
        ),
        _index_dropped("task", "tasks", "enumeration_task", "enumeration_task_session_id_6d4dbd5b"),
    ]
