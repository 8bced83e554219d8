"""System checks (``manage.py check``, and every management command's start)."""

from django.conf import settings
from django.core.checks import Warning, register


@register()
def compiled_listing_check(app_configs, **kwargs) -> list[Warning]:
    from enumeration.connectors.compiled import BUILT

    if BUILT or not settings.CENSUS["COMPILED_LISTING"]:
        return []
    return [
        Warning(
            "The compiled listing (enumeration/connectors/_scan.c) is not built: directories "
            "are listed in pure Python, with the same results and more CPU.",
            hint="Build it with a C compiler: `python setup.py build_ext --inplace` "
            "(`make venv` does), or set CENSUS_COMPILED_LISTING=false to say it is meant.",
            id="census.W001",
        )
    ]
