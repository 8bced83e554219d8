from django.db import migrations


def set_unlogged(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE staged_output_records SET UNLOGGED")


def set_logged(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE staged_output_records SET LOGGED")


class Migration(migrations.Migration):
    """Staging is disposable: after a database crash an interrupted unit is simply listed again,
    so its table skips the write-ahead log."""

    dependencies = [("enumeration", "0001_initial")]

    operations = [migrations.RunPython(set_unlogged, set_logged)]
