"""Builds Census's one compiled module, the listing's per-entry work, in place:

    python setup.py build_ext --inplace

Census runs without it (``enumeration.connectors.filesystem`` falls back to pure Python), so a
machine without a C compiler still runs it; ``manage.py check`` says when it is missing.
"""

from setuptools import Extension, setup

setup(
    packages=[],
    ext_modules=[
        Extension(
            "enumeration.connectors._scan",
            ["enumeration/connectors/_scan.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror"],
        )
    ],
)
