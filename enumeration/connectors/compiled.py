"""The listing's per-entry work compiled (``_scan.c``), where it was built and is switched on.

``python setup.py build_ext --inplace`` builds it (``make venv`` does). Without it, or with
``CENSUS_COMPILED_LISTING=false``, the pure-Python twins run: the same records, more CPU.
"""

from types import ModuleType

from django.conf import settings

from enumeration.choices import RecordType
from enumeration.connectors.base import Entry

try:
    from enumeration.connectors import _scan
except ImportError:  # not built where Census was installed (no C compiler there)
    _scan = None
else:
    _scan.configure(Entry, RecordType.FILE, RecordType.DIRECTORY, RecordType.OTHER)

BUILT = _scan is not None


def compiled() -> ModuleType | None:
    """The compiled module, or None where the pure-Python code is to run."""
    if _scan is None or not settings.CENSUS["COMPILED_LISTING"]:
        return None
    return _scan
