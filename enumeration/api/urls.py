"""The enumeration API, mounted at /api/ by config.urls."""

from rest_framework.routers import SimpleRouter

from enumeration.api.views import (
    BatchViewSet,
    ScanTargetViewSet,
    SessionViewSet,
    TaskOutputRecordViewSet,
    TaskViewSet,
)

app_name = "enumeration"

router = SimpleRouter()
router.register("targets", ScanTargetViewSet, basename="target")
router.register("sessions", SessionViewSet, basename="session")
router.register("batches", BatchViewSet, basename="batch")
router.register("tasks", TaskViewSet, basename="task")
router.register("output-records", TaskOutputRecordViewSet, basename="output-record")

urlpatterns = router.urls
