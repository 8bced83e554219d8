"""At most one active session per target, by constraint.

The race this closes (two concurrent starts of one target, or a resume of an old session while a
newer one ran) may have left a database with several active sessions of a target. Before the
constraint is added, all but the newest of each such target are failed, with the reason; a
resume of one of them is refused while another of its target is active, as for any session.
"""

from django.db import migrations, models
from django.db.models import Count
from django.utils import timezone

ACTIVE = ("INITIALIZED", "IN_PROGRESS", "STALLED")
REASON = (
    "another session of this target was active at the same time; failed by migration "
    "enumeration.0010, which keeps the newest active session of each target"
)


def fail_all_but_the_newest_active_session(apps, schema_editor) -> None:
    SessionState = apps.get_model("enumeration", "SessionState")
    active = SessionState.objects.filter(status__in=ACTIVE)
    crowded = active.values("target_id").annotate(n=Count("id")).filter(n__gt=1)
    for row in crowded:
        newest = active.filter(target_id=row["target_id"]).order_by("-created_at").first()
        active.filter(target_id=row["target_id"]).exclude(pk=newest.pk).update(
            status="FAILED", failure_reason=REASON, completed_at=timezone.now()
        )


class Migration(migrations.Migration):
    dependencies = [
        ("enumeration", "0009_record_ids_in_blocks_classification_ranges"),
    ]

    operations = [
        migrations.RunPython(fail_all_but_the_newest_active_session, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="sessionstate",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status__in", ACTIVE)),
                fields=("target",),
                name="one_active_session_per_target",
            ),
        ),
    ]
