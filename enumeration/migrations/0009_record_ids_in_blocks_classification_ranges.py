# Written by hand: no model changes, a sequence setting and a payload format.

from django.db import migrations

# One nextval() reserves a block of this many record ids (the engine reads the increment back).
RECORD_ID_BLOCK = 1024


def _set_increment(schema_editor, increment: int) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return  # SQLite's ids come from the ORM's inserts, one at a time
    schema_editor.execute(
        f'ALTER TABLE "task_output_records" ALTER COLUMN "id" SET INCREMENT BY {increment}'
    )


def _ranges(ids):
    ranges = []
    for record_id in sorted(ids):
        if ranges and record_id == ranges[-1][1] + 1:
            ranges[-1][1] = record_id
        else:
            ranges.append([record_id, record_id])
    return ranges


def _rewrite_payloads(apps, old_key, new_key, convert):
    Task = apps.get_model("enumeration", "Task")
    pending = Task.objects.filter(kind="CLASSIFICATION", payload__has_key=old_key)
    for task in pending.iterator(chunk_size=500):
        payload = dict(task.payload)
        payload[new_key] = convert(payload.pop(old_key))
        Task.objects.filter(pk=task.pk).update(payload=payload)


def forwards(apps, schema_editor):
    _set_increment(schema_editor, RECORD_ID_BLOCK)
    _rewrite_payloads(apps, "record_ids", "record_id_ranges", _ranges)


def backwards(apps, schema_editor):
    _set_increment(schema_editor, 1)
    _rewrite_payloads(
        apps,
        "record_id_ranges",
        "record_ids",
        lambda ranges: [i for first, last in ranges for i in range(first, last + 1)],
    )


class Migration(migrations.Migration):
    dependencies = [
        ("enumeration", "0008_digests_as_uuid_batch_ids_time_ordered"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
