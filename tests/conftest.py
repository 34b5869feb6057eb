"""Fixtures shared across test directories.

`mesh`: the one session-wide local environment (stack `e2e`, on free ports, in a temporary root), started
on first use by tests/e2e and tests/testinfra alike, so a session running both starts it once.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Mesh, running_mesh


@pytest.fixture(scope="session")
def mesh(tmp_path_factory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp("weir-e2e")) as started:
        yield started
