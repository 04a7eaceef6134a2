"""Builds the one native part, sfu/_lane.c and sfu/_reader.c; everything else is in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds and
the SFU forwards every packet in Python (sfu/lane.py). CI asserts it was built.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sfu._lane",
            ["sfu/_lane.c", "sfu/_reader.c"],
            depends=["sfu/_lane.h"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
