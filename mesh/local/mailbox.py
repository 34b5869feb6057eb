"""The mailbox of a running supervisor: how `meshctl restart|stop|start WORKLOAD` reaches it.

A directory, `<state>/requests/`: meshctl writes `<id>.json` ({"action", "workload"}) atomically; the
supervisor takes requests on its next tick (deleting them), carries them out (mesh.local.lifecycle) and
writes `<id>.result.json`, which meshctl waits for and deletes. Plain files: no port, no socket to
secure beyond the state directory's permissions, and a request survives a slow supervisor tick. A new
supervisor clears what an earlier one left.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.local import errors, statedir

# How long meshctl waits for an answer: settle + two stops + two starts, with margin.
RESULT_TIMEOUT_S = 90.0
POLL_S = 0.1  # meshctl's poll for the answer: the supervisor's tick


@dataclass(frozen=True, slots=True)
class Request:
    id: str
    action: str
    workload: str


def requests_dir(state: statedir.StateDir) -> Path:
    return state.path / "requests"


def submit(state: statedir.StateDir, action: str, workload: str) -> str:
    """Leave a request for the supervisor; its id."""
    directory = requests_dir(state)
    directory.mkdir(parents=True, exist_ok=True)
    request_id = uuid.uuid4().hex[:12]
    statedir.write_json(directory / f"{request_id}.json", {"action": action, "workload": workload})
    return request_id


def take(state: statedir.StateDir) -> list[Request]:
    """The requests waiting, oldest first, removed from the directory (the supervisor's side)."""
    directory = requests_dir(state)
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime):
        if path.name.endswith(".result.json") or path.name.startswith("."):
            continue
        doc = statedir.read_json(path) or {}
        path.unlink(missing_ok=True)
        found.append(Request(path.stem, str(doc.get("action")), str(doc.get("workload"))))
    return found


def clear(state: statedir.StateDir) -> None:
    """Forget requests and results of an earlier supervisor."""
    directory = requests_dir(state)
    if directory.is_dir():
        for path in directory.glob("*.json"):
            path.unlink(missing_ok=True)


def answer(state: statedir.StateDir, request_id: str, result: dict[str, Any]) -> None:
    statedir.write_json(requests_dir(state) / f"{request_id}.result.json", result)


def wait_result(state: statedir.StateDir, request_id: str, alive: Callable[[], bool],
                timeout: float = RESULT_TIMEOUT_S) -> dict[str, Any]:
    """The supervisor's result for `request_id` (meshctl's side); WeirError when it never comes."""
    path = requests_dir(state) / f"{request_id}.result.json"
    deadline = time.monotonic() + timeout
    while True:
        doc = statedir.read_json(path)
        if doc is not None:
            path.unlink(missing_ok=True)
            return doc
        if not alive():
            raise errors.WeirError("the supervisor stopped before answering")
        if time.monotonic() >= deadline:
            raise errors.WeirError(f"no answer from the supervisor after {timeout:g} s (request {request_id})")
        time.sleep(POLL_S)
