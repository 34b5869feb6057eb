"""The one part of the build pyproject.toml cannot declare: the optional compiled telemetry helpers
(mesh/proxy/_speedups.pyx). `optional=True`: without a C compiler the install still succeeds, and the
pure-Python code runs."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("mesh.proxy._speedups", ["mesh/proxy/_speedups.pyx"], optional=True)])
