"""Runs `async def` tests on a fresh event loop (no pytest-asyncio); `@pytest.mark.uvloop` picks uvloop. `ca`:
a fresh mesh CA (tests.pki) for the TLS tests."""

from __future__ import annotations

import asyncio
import inspect

import pytest
import uvloop

from tests import pki


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "uvloop: run this async test on a uvloop event loop")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = inspect.signature(pyfuncitem.obj).parameters
    coro = pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names})
    if pyfuncitem.get_closest_marker("uvloop"):
        uvloop.run(coro)
    else:
        asyncio.run(coro)
    return True


@pytest.fixture
def loop():
    """A current (not running) loop, for sync tests that build objects which look one up."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def ca():
    return pki.make_ca()
