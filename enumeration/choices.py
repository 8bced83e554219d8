from django.db import models


class TargetType(models.TextChoices):
    DIRECTORY = "directory", "Directory"


class SessionStatus(models.TextChoices):
    INITIALIZED = "INITIALIZED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STALLED = "STALLED"
    PARTIALLY_COMPLETED = "PARTIALLY_COMPLETED"


class BatchStatus(models.TextChoices):
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    PARTIALLY_COMPLETED = "PARTIALLY_COMPLETED"


class TaskKind(models.TextChoices):
    DISCOVERY_ENUMERATE = "DISCOVERY_ENUMERATE"
    CLASSIFICATION = "CLASSIFICATION"


class TaskStatus(models.TextChoices):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class RecordType(models.TextChoices):
    FILE = "FILE"
    DIRECTORY = "DIRECTORY"
    SYMLINK = "SYMLINK"
    OTHER = "OTHER"


class CredentialType(models.TextChoices):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    GITHUB = "GITHUB"
    S3 = "S3"
