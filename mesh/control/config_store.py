"""The config seam, local implementation: Istio resources from `--config` files and the HTTP API.

Every input goes through `mesh.api.load_text` (the one validator); an apply batch is all-or-nothing.
Applied resources are persisted under `<state-dir>/config/`, one YAML file per resource key, so a
restarted control plane comes back with them. `mesh.control.snapshot` freezes `resources()`.
On Kubernetes the store is fed by the CRD watch instead (`mesh.control.kube_config` calls `sync`) and
is read-only for the HTTP API: the cluster's custom resources are the truth there.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

import mesh.api as api

log = logging.getLogger(__name__)

CREATED = "created"
CONFIGURED = "configured"
UNCHANGED = "unchanged"
DELETED = "deleted"
LABEL_FILE = "label.json"  # beside the resources: what the last replacing apply said it was

# Kind aliases accepted by `select` (what users type after `meshctl get`).
_KIND_ALIASES = {
    "vs": "virtualservice",
    "dr": "destinationrule",
    "gw": "gateway",
    "se": "serviceentry",
    "pa": "peerauthentication",
    "ap": "authorizationpolicy",
    "ra": "requestauthentication",
}


class StoreError(RuntimeError):
    """The store could not persist a change (disk full, permissions): nothing was applied."""


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    action: str  # CREATED | CONFIGURED | UNCHANGED | DELETED


@dataclass(frozen=True, slots=True)
class ApplyResult:
    changes: tuple[Change, ...]
    warnings: tuple[str, ...]

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.changes]


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: tuple[str, ...]
    not_found: tuple[str, ...]


class ConfigStore:
    """The current set of resources by key (`Kind/namespace/name`), plus change notification."""

    def __init__(self, state_dir: str | os.PathLike[str] | None = None, *, read_only: str = "") -> None:
        self.config_dir = Path(state_dir) / "config" if state_dir is not None else None
        self._resources: dict[str, Any] = {}
        self._listeners: list[Callable[[], None]] = []
        self.revision = 0  # bumped on every effective change
        self.read_only = read_only  # when set, why apply/delete are refused (config comes from elsewhere)
        self.rejected: Mapping[str, str] = MappingProxyType({})  # key → why a source refused it
        # What the whole set is, as told by the last replacing apply (a routing release: {"release":
        # "ratings-50@v2", "digest": …}); cleared by any other change, since the set then is no release.
        self.label: Mapping[str, Any] | None = None

    # -- reading -------------------------------------------------------------------------------------

    def resources(self) -> tuple[Any, ...]:
        return tuple(self._resources[k] for k in sorted(self._resources))

    def get(self, key: str) -> Any | None:
        return self._resources.get(key)

    def select(self, kind: str | None = None, namespace: str | None = None, name: str | None = None) -> list[Any]:
        wanted = normalize_kind(kind) if kind else None
        return [
            r
            for r in self.resources()
            if (wanted is None or r.kind.lower() == wanted)
            and (namespace is None or r.namespace == namespace)
            and (name is None or r.name == name)
        ]

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    # -- loading ---------------------------------------------------------------------------------------

    def load_files(self, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
        """The `--config` files; a bad file raises ConfigError (the control plane refuses to start)."""
        files = [(str(p), Path(p).read_text()) for p in paths]
        resources = parse(files, admit=True)
        for r in resources:
            self._resources[r.key] = r
        self._changed(bool(resources))
        return [r.key for r in resources]

    def load_persisted(self) -> list[str]:
        """Resources applied before a restart; a file that no longer validates is skipped and logged."""
        if self.config_dir is None or not self.config_dir.is_dir():
            return []
        keys = []
        for path in sorted(self.config_dir.glob("*.yaml")):
            namespace = _namespace_from_filename(path.name)
            try:
                loaded = api.load_text(path.read_text(), str(path), default_namespace=namespace)
                for r in loaded:
                    api.refuse_unsupported(r, file=str(path))
            except (OSError, api.ConfigError) as exc:
                log.error("persisted config %s skipped: %s", path, exc)
                continue
            for r in loaded:
                self._resources[r.key] = r
                keys.append(r.key)
        try:
            self.label = json.loads((self.config_dir / LABEL_FILE).read_text())
        except (OSError, ValueError):
            self.label = None
        self._changed(bool(keys))
        return keys

    def sync(self, resources: Mapping[str, Any], rejected: Mapping[str, str] | None = None) -> bool:
        """Replace the whole set with what an external source holds (already validated, never persisted);
        True when it changed. `rejected` is what that source refused, for /debug."""
        self.rejected = MappingProxyType(dict(rejected or {}))
        if dict(resources) == self._resources:
            return False
        self._resources = dict(resources)
        self._changed(True)
        return True

    # -- changes ---------------------------------------------------------------------------------------

    def apply(
        self, files: Sequence[tuple[str, str]], *, dry_run: bool = False, default_namespace: str | None = None,
        replace: bool = False, label: Mapping[str, Any] | None = None,
    ) -> ApplyResult:
        """Validate every document, then apply all of them or none (ConfigError/StoreError). With `replace`,
        the documents become the whole set (every other resource is deleted, in the same change) and
        `label` says what that set is, e.g. the routing release it came from."""
        self._check_writable()
        incoming = parse(files, default_namespace, admit=True)
        batch = {r.key: r for r in incoming}  # a later document with the same key wins, as in kubectl
        changes = []
        for key, resource in batch.items():
            old = self._resources.get(key)
            action = CREATED if old is None else UNCHANGED if old == resource else CONFIGURED
            changes.append(Change(key, action))
        removed = sorted(set(self._resources) - set(batch)) if replace else []
        changes.extend(Change(key, DELETED) for key in removed)
        after = dict(batch) if replace else {**self._resources, **batch}
        warnings = _warnings(after, list(batch.values()))
        if not dry_run:
            changed = {c.key: batch[c.key] for c in changes if c.action in (CREATED, CONFIGURED)}
            if replace:
                new_label = dict(label) if label else None
            else:  # a merge that changes the set leaves whatever release it was
                new_label = None if changed else self.label
            self._persist(changed, removed, label=new_label)
            self._resources = after
            relabelled = new_label != self.label
            self.label = new_label
            self._changed(bool(changed or removed) or relabelled)
        return ApplyResult(tuple(changes), tuple(warnings))

    def delete(
        self, files: Sequence[tuple[str, str]], *, dry_run: bool = False, default_namespace: str | None = None
    ) -> DeleteResult:
        """Remove the resources the documents name (their content is validated, then only keys matter)."""
        return self.delete_keys((r.key for r in parse(files, default_namespace)), dry_run=dry_run)

    def delete_keys(self, keys: Iterable[str], *, dry_run: bool = False) -> DeleteResult:
        self._check_writable()
        wanted = sorted(set(keys))
        found = tuple(k for k in wanted if k in self._resources)
        missing = tuple(k for k in wanted if k not in self._resources)
        if found and not dry_run:
            self._persist({}, found, label=None)
            for key in found:
                del self._resources[key]
            self.label = None
            self._changed(True)
        return DeleteResult(found, missing)

    # -- internals -------------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(self.read_only)

    def _changed(self, changed: bool) -> None:
        if not changed:
            return
        self.revision += 1
        for callback in self._listeners:
            callback()

    def _persist(self, written: dict[str, Any], removed: Iterable[str], *, label: Mapping[str, Any] | None
                 ) -> None:
        """Write every file to a temp name first, then rename: a failure leaves the old files in place."""
        if self.config_dir is None:
            return
        try:
            self.config_dir.mkdir(parents=True, exist_ok=True)
            staged = []
            for key, resource in written.items():
                path = self.config_dir / filename_for(key)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(yaml.safe_dump(api.dump(resource), sort_keys=False))
                staged.append((tmp, path))
            if label != self.label:  # most applies leave the label as it is: no write then
                label_path = self.config_dir / LABEL_FILE
                label_tmp = label_path.with_suffix(".tmp")
                label_tmp.write_text(json.dumps(label))
                staged.append((label_tmp, label_path))
            for tmp, path in staged:
                os.replace(tmp, path)
            for key in removed:
                try:
                    (self.config_dir / filename_for(key)).unlink()
                except FileNotFoundError:
                    pass
        except OSError as exc:
            raise StoreError(f"cannot persist config under {self.config_dir}: {exc}") from exc


def parse(
    files: Sequence[tuple[str, str]], default_namespace: str | None = None, *, admit: bool = False
) -> list[Any]:
    """Every document of every file, or ConfigError for the first bad one. With `admit`, also refuse
    valid Istio that Weir cannot apply (`api.refuse_unsupported`, e.g. AuthorizationPolicy CUSTOM)."""
    out: list[Any] = []
    for name, text in files:
        loaded = api.load_text(text, name, default_namespace=default_namespace)
        if admit:
            for r in loaded:
                api.refuse_unsupported(r, file=name)
        out.extend(loaded)
    return out


def filename_for(key: str) -> str:
    """`VirtualService/bookinfo/books` → `VirtualService_bookinfo_books.yaml` (names and namespaces
    are DNS names, so `_` cannot occur in them and the mapping is reversible)."""
    return key.replace("/", "_") + ".yaml"


def _namespace_from_filename(filename: str) -> str | None:
    parts = filename.removesuffix(".yaml").split("_")
    return parts[1] if len(parts) == 3 else None


def normalize_kind(kind: str) -> str:
    """`vs`, `VirtualServices`, `virtualservice` → `virtualservice`; `serviceentries` → `serviceentry`."""
    k = kind.lower()
    k = _KIND_ALIASES.get(k, k)
    if k.endswith("ies"):
        return k[:-3] + "y"
    return k[:-1] if k.endswith("s") and not k.endswith("ss") else k


def _warnings(after: dict[str, Any], applied: list[Any]) -> list[str]:
    keys = {r.key for r in applied}
    out = []
    try:
        messages = api.analyze([after[k] for k in sorted(after)])
    except Exception as exc:  # the analyzer must not block an apply that validated
        log.exception("analyze failed")
        messages = []
        out.append(f"Warning [internal] analysis failed: {exc}")
    # analyze() already reports fields parsed but not enforced (WEIR0001), so nothing is added here.
    out.extend(str(m) for m in messages if not m.resource_key or m.resource_key in keys)
    return out
