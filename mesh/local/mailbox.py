"""The mailbox of a running supervisor: how `meshctl restart|stop|start WORKLOAD` reaches it.

A directory, `<state>/requests/`: meshctl writes `<id>.json` ({"action", "workload"}) atomically; the
supervisor takes requests on its next tick (deleting them), carries them out (mesh.local.lifecycle) and
writes `<id>.result.json`, which meshctl waits for and deletes. Plain files: no port, no socket to
secure beyond the state directory's permissions, and a request survives a slow supervisor tick. A new
supervisor clears what an earlier one left. The supervisor's side never raises over one bad file: a file
that vanishes while being taken is skipped, one that is not a request is taken and answered with an error.
"""

from __future__ import annotations

import json
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
    error: str = ""  # why the file is not a request (the supervisor answers with it)


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
    try:
        names = [p for p in directory.iterdir() if _is_request(p.name)]
    except OSError:  # no directory yet (or unreadable: the next tick retries)
        return []
    waiting = []
    for path in names:
        try:
            waiting.append((path.stat().st_mtime, path.name, path))
        except OSError:
            continue  # gone since listed (meshctl gave up on it, or `clear`)
    found = []
    for _, _, path in sorted(waiting):
        try:
            text = path.read_text()
            path.unlink(missing_ok=True)
        except OSError:
            continue
        found.append(_parse(path.name.removesuffix(".json"), text))
    return found


def _is_request(name: str) -> bool:
    """`<id>.json`; not a result, not a hidden (temporary) file."""
    return name.endswith(".json") and not name.endswith(".result.json") and not name.startswith(".")


def _parse(request_id: str, text: str) -> Request:
    """The request in a file's `text`; one carrying an `error` when it is not {"action", "workload"}."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return Request(request_id, "", "", f"malformed request {request_id}: not JSON ({exc})")
    if not isinstance(doc, dict) or not all(isinstance(doc.get(key), str) for key in ("action", "workload")):
        return Request(request_id, "", "", f"malformed request {request_id}: expected a JSON object with "
                                           f"string fields action and workload, got {str(doc)[:80]}")
    return Request(request_id, doc["action"], doc["workload"])


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
