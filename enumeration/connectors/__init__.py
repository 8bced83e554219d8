"""Connectors list one level of one container and stream what they find in small batches.

Adding a source means adding a connector and registering it in ``connector_for``.
"""

from enumeration.choices import TargetType
from enumeration.connectors.base import (
    Connector,
    Entry,
    Exclusion,
    UnitUnreadable,
    UnitVanished,
)
from enumeration.connectors.filesystem import FilesystemConnector


def connector_for(target_type: str) -> Connector:
    if target_type == TargetType.DIRECTORY:
        return FilesystemConnector()
    raise ValueError(f"no connector for target type {target_type!r}")


__all__ = [
    "Connector",
    "Entry",
    "Exclusion",
    "FilesystemConnector",
    "UnitUnreadable",
    "UnitVanished",
    "connector_for",
]
