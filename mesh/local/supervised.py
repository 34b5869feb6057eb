"""One supervised process: its run-time state (`Child`, one per ProcessSpec of the plan) and the backoff
of its restarts after a crash.

mesh.local.supervisor keeps a Child per planned process and moves it through its statuses;
mesh.local.lifecycle's operations hold and release it; `row` is its entry in state.json. A crash
(`schedule_restart`) makes the restart due after BACKOFF_BASE, doubled per consecutive crash up to
BACKOFF_MAX, and back to BACKOFF_BASE once the process had stayed up STABLE_AFTER.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.local import plan as plan_mod

BACKOFF_BASE = 0.5  # first restart delay; doubles per consecutive crash
BACKOFF_MAX = 10.0
STABLE_AFTER = 10.0  # a process up this long has its backoff reset when it next crashes


@dataclass(slots=True)
class Child:
    """Run-time state of one planned process."""

    spec: plan_mod.ProcessSpec
    proc: subprocess.Popen[bytes] | None = None
    # pending → (waiting: for the process it starts after) → starting → ready; crashed (waiting to restart);
    # stopping → stopped
    status: str = "pending"
    ready: bool = False
    held: bool = False  # a lifecycle operation owns it: not restarted by the supervisor, not in the registry
    restarts: int = 0
    crashes: int = 0  # consecutive crashes, for the backoff
    started: float = 0.0  # monotonic
    started_at: str | None = None
    restart_at: float | None = None
    exit_code: int | None = None
    token: str | None = None  # the bootstrap token of the current run (proxies only)

    def row(self, log_dir: Path) -> dict[str, Any]:
        """Its entry in state.json's `processes`."""
        return {
            "role": self.spec.role, "workload": self.spec.workload, "stage": self.spec.stage,
            "pid": self.proc.pid if self.proc else None, "status": self.status, "ready": self.ready,
            "restarts": self.restarts, "exit_code": self.exit_code, "started_at": self.started_at,
            "ports": dict(self.spec.ports), "ready_url": self.spec.ready_url, "log": str(log_dir / self.spec.log),
        }

    def schedule_restart(self, now: float) -> float:
        """Mark it crashed, its restart due after the backoff; that delay in seconds."""
        self.crashes = 1 if now - self.started >= STABLE_AFTER else self.crashes + 1
        delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (self.crashes - 1))
        self.status, self.ready, self.restart_at = "crashed", False, now + delay
        return delay
