"""The state directory of one stack (`.weir/<stack>/`): its layout, atomic JSON files and the pid file.

The supervisor (mesh.local.supervisor) writes it; meshctl (mesh.local.runtime) and the control plane read it.
Layout and file shapes: docs/architecture.md, "Processes", "Registry" and "Certificates". The private parts
(`ca/`: the CA key and the bootstrap tokens; `proxies/<id>/`: each proxy's key) are owner-only (0700).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.control.private import ensure_private_dir


@dataclass(frozen=True, slots=True)
class StateDir:
    """Paths inside `.weir/<stack>/`; creating them is the supervisor's job (`ensure`)."""

    path: Path

    @property
    def pid_file(self) -> Path:
        return self.path / "supervisor.pid"

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def registry_file(self) -> Path:
        return self.path / "registry.json"

    @property
    def plan_file(self) -> Path:
        return self.path / "plan.json"

    @property
    def config_dir(self) -> Path:
        return self.path / "config"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def ca_dir(self) -> Path:
        """The mesh CA (written by the control plane): ca-key.pem, ca-cert.pem, root-cert.pem, cert-chain.pem."""
        return self.path / "ca"

    @property
    def root_cert_file(self) -> Path:
        return self.ca_dir / "root-cert.pem"

    @property
    def tokens_dir(self) -> Path:
        """One-time bootstrap token records (mesh.control.tokens), written by the supervisor."""
        return self.ca_dir / "tokens"

    @property
    def proxies_dir(self) -> Path:
        return self.path / "proxies"

    def proxy_dir(self, proxy_id: str) -> Path:
        """A proxy's key and certificate (its --cert-dir)."""
        return self.proxies_dir / proxy_id

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"

    def log(self, filename: str) -> Path:
        return self.logs / filename

    def ensure(self) -> None:
        for directory in (self.path, self.logs, self.config_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for directory in (self.ca_dir, self.tokens_dir, self.proxies_dir):
            ensure_private_dir(directory)

    def read_pid(self) -> int | None:
        """The supervisor pid recorded in the pid file, or None when absent or unreadable."""
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def write_pid(self, pid: int) -> None:
        write_text(self.pid_file, f"{pid}\n")

    def remove_pid(self, only: int | None = None) -> None:
        """Remove the pid file; with `only`, only when it still names that pid (never another's)."""
        if only is not None and self.read_pid() != only:
            return
        try:
            self.pid_file.unlink()
        except FileNotFoundError:
            pass

    def read_state(self) -> dict[str, Any] | None:
        return read_json(self.state_file)


def utc_now() -> str:
    """`2026-11-26T04:00:00Z`: when a record (smoke result, release, promotion) was made."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_text(path: Path, text: str) -> None:
    """Replace `path` atomically: readers see the old or the new content, never a partial file.

    No fsync: these files describe live processes and are rewritten on every change, so surviving a
    machine crash does not matter; what matters is that a concurrent reader never sees half a file.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, doc: Any) -> None:
    write_text(path, json.dumps(doc, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when the file does not exist (files are replaced atomically)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
