"""The local registry: registry.json parsing, mtime polling, keeping the last good state."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from mesh.control import registry
from tests.mesh.control.conftest import BOOKINFO


def write(path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(data if isinstance(data, str) else json.dumps(data))
    os.replace(tmp, path)


def test_parse_sorts_and_freezes():
    state = registry.parse_registry({k: list(reversed(v)) for k, v in BOOKINFO.items()})
    assert [s.name for s in state.services] == ["books", "gw", "ratings", "ui"]
    books = state.services[0]
    assert books.fqdn == "books.bookinfo.svc.cluster.local"
    assert books.ports == (registry.ServicePort("http", 9080, 9080, "HTTP"),)
    with pytest.raises(TypeError):
        books.selector["app"] = "x"  # type: ignore[index]
    assert state.to_dict()["workloads"][0]["serviceAccount"] == "books"


def test_parse_rejects_malformed_entries():
    with pytest.raises(registry.RegistryError):
        registry.parse_registry({"workloads": [{"name": "x"}]})  # no port
    with pytest.raises(registry.RegistryError):
        registry.parse_registry([])


def test_the_writers_generation_is_part_of_the_state():
    assert registry.parse_registry(BOOKINFO).generation == 0  # a writer without one
    state = registry.parse_registry({**BOOKINFO, "generation": 12})
    assert state.generation == 12 and state.to_dict()["generation"] == 12
    with pytest.raises(registry.RegistryError):
        registry.parse_registry({**BOOKINFO, "generation": "twelve"})


def test_a_new_generation_with_the_same_entries_is_a_change(tmp_path):
    # the snapshot taken after it reports the generation: the writer learns its change was read
    path = tmp_path / "registry.json"
    reg = registry.LocalRegistry(path)
    write(path, {**BOOKINFO, "generation": 1})
    assert reg.poll() is True and reg.current().generation == 1
    write(path, {**BOOKINFO, "generation": 2})
    assert reg.poll() is True and reg.current().generation == 2


def test_poll_notices_changes_and_keeps_last_good(tmp_path, caplog):
    path = tmp_path / "registry.json"
    reg = registry.LocalRegistry(path)
    events = []
    reg.subscribe(lambda: events.append(1))
    assert reg.poll() is False and reg.loaded  # missing file: empty registry, loaded
    write(path, BOOKINFO)
    assert reg.poll() is True and len(reg.current().services) == 4 and events == [1]
    assert reg.poll() is False  # unchanged stamp
    write(path, "{not json")
    assert reg.poll() is False and len(reg.current().services) == 4
    assert "keeping the last good state" in caplog.text
    changed = {**BOOKINFO, "workloads": [dict(w, ready=False) for w in BOOKINFO["workloads"]]}
    write(path, changed)
    assert reg.poll() is True and not any(w.ready for w in reg.current().workloads)
    write(path, json.dumps(changed, indent=2))  # same content, new file: no notification
    assert reg.poll() is False and events == [1, 1]


def test_background_watch(tmp_path):
    path = tmp_path / "registry.json"
    write(path, {"services": [], "workloads": []})

    async def scenario():
        reg = registry.LocalRegistry(path, poll_interval=0.01)
        changed = asyncio.Event()
        reg.subscribe(changed.set)
        await reg.start()
        write(path, BOOKINFO)
        await asyncio.wait_for(changed.wait(), 2)
        await reg.stop()
        return reg.current()

    assert len(asyncio.run(scenario()).workloads) == 6
