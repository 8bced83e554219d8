from enumeration.models.events import DomainEvent
from enumeration.models.sessions import (
    Checkpoint,
    InvalidTransition,
    ScanTarget,
    SessionState,
)
from enumeration.models.work import Batch, StagedOutputRecord, Task, TaskOutputRecord

__all__ = [
    "Batch",
    "Checkpoint",
    "DomainEvent",
    "InvalidTransition",
    "ScanTarget",
    "SessionState",
    "StagedOutputRecord",
    "Task",
    "TaskOutputRecord",
]
