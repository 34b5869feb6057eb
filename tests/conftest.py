"""Fixtures shared across test directories.

`mesh`: the one session-wide local environment (stack `e2e`, on free ports, in a temporary root), started
on first use by tests/e2e and tests/testinfra alike, so a session running both starts it once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.e2e.conftest import Mesh, running_mesh

# Property tests are reproducible by default: the same examples on every run and machine, no example
# database (CI starts from a fresh clone anyway). HYPOTHESIS_PROFILE=explore randomizes and keeps a database,
# for looking further than CI does; per-test `max_examples` still bounds each run.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def mesh(tmp_path_factory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp("weir-e2e")) as started:
        yield started
