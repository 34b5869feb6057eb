"""Routing releases: immutable, content-addressed snapshots of a scenario's routing and security resources.

A release is what an environment runs. `meshctl release create ratings-50` validates
`stacks/routing/ratings-50.yaml` through `mesh.api`, and records its resources, normalised by `mesh.api.dump`,
as `stacks/releases/ratings-50/v<N>.yaml` with a digest over them. A stack file pins one release by name and
digest::

    weir:release: ratings-50@v2
    weir:releaseDigest: sha256:5f0c…

Rules, as for container images:
- The digest is SHA-256 over the canonical JSON of the resources (keys sorted, no whitespace), so it names
  the content: creating a release from unchanged content returns the existing release instead of a new one.
- A release file is never edited: loading recomputes the digest and refuses a file whose content no longer
  matches the digest it records, and a pin refuses a release whose digest differs from the pinned one (so
  editing content and recorded digest together is caught too).
- Rollback is pinning the previous release; nothing is ever rewritten in place (files are created with
  O_EXCL).

Pure apart from reading and creating files under `stacks/releases/`; no clock (callers pass `created`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RELEASES_DIR = Path("stacks") / "releases"
RELEASE_KEY = "weir:release"
DIGEST_KEY = "weir:releaseDigest"
_REF = re.compile(r"^(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?)@v(?P<version>[1-9][0-9]*)$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
HEADER = (
    "# A Weir routing release: immutable. Created by `meshctl release create`; never edit it (its digest\n"
    "# would no longer match and every reader refuses it). Roll back by pinning the previous release.\n"
)

Obj = dict[str, Any]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the `weir.dev/expect` annotation) as `|` blocks, so releases and diffs read well."""


_Dumper.add_representer(
    str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None))


def dump_yaml(data: Any, *, documents: bool = False) -> str:
    if documents:
        return yaml.dump_all(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


class ReleaseError(ValueError):
    """A release reference, file or pin is wrong: the message names the file or key."""


@dataclass(frozen=True, slots=True)
class Release:
    name: str  # the scenario it was made from
    version: int
    digest: str  # "sha256:<hex>" over the resources
    created: str  # ISO 8601, UTC
    created_by: str
    source: str  # the scenario file, relative to the project root
    resources: tuple[Obj, ...]

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    def istio_yaml(self) -> str:
        """The resources as one multi-document Istio YAML text (what `kubectl apply -f` takes)."""
        return dump_yaml(list(self.resources), documents=True)

    def keys(self) -> dict[str, Obj]:
        """Resources by `Kind/namespace/name`, the key the control plane uses."""
        return {resource_key(r): r for r in self.resources}


def resource_key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('namespace', '')}/{meta.get('name', '')}"


def digest_of(resources: list[Obj] | tuple[Obj, ...]) -> str:
    canonical = json.dumps(list(resources), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def parse_ref(ref: str) -> tuple[str, int]:
    match = _REF.match(ref or "")
    if not match:
        raise ReleaseError(f"release reference {ref!r} must look like NAME@vN (e.g. ratings-50@v1)")
    return match["name"], int(match["version"])


class ReleaseStore:
    """The releases recorded under `<root>/stacks/releases/`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.directory = root / RELEASES_DIR

    def path(self, name: str, version: int) -> Path:
        return self.directory / name / f"v{version}.yaml"

    def versions(self, name: str) -> list[int]:
        found = (p.stem[1:] for p in (self.directory / name).glob("v*.yaml"))
        return sorted(int(v) for v in found if v.isdigit())

    def get(self, ref: str) -> Release:
        """The release `NAME@vN`, verified against the digest it records."""
        name, version = parse_ref(ref)
        path = self.path(name, version)
        if not path.is_file():
            known = ", ".join(f"{name}@v{v}" for v in self.versions(name)) or "none"
            raise ReleaseError(f"release {ref} not found: no {self._display(path)} (releases of {name}: {known})")
        return self._read(path, name, version)

    def list(self) -> list[Release]:
        names = sorted(p.name for p in self.directory.iterdir() if p.is_dir()) if self.directory.is_dir() else []
        return [self.get(f"{name}@v{v}") for name in names for v in self.versions(name)]

    def latest(self, name: str) -> Release | None:
        versions = self.versions(name)
        return self.get(f"{name}@v{versions[-1]}") if versions else None

    def create(self, scenario_file: Path, *, created: str, created_by: str, name: str | None = None
               ) -> tuple[Release, bool]:
        """Record the scenario as the next version of release `name` (default: the file's stem); when the
        latest version already has this content, return it and False instead."""
        from mesh.manifests import routing  # mesh.api loads slowly; reading releases does not need it

        name = name or scenario_file.stem
        parse_ref(f"{name}@v1")  # the name must be a DNS label
        resources = tuple(routing.custom_resources(scenario_file))  # validates (mesh.api.ConfigError)
        digest = digest_of(resources)
        latest = self.latest(name)
        if latest is not None and latest.digest == digest:
            return latest, False
        release = Release(name, (latest.version + 1) if latest else 1, digest, created, created_by,
                          self._display(scenario_file), resources)
        path = self.path(release.name, release.version)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"release": release.ref, "name": release.name, "version": release.version, "digest": digest,
                "created": created, "createdBy": created_by, "source": release.source,
                "resources": list(resources)}
        try:
            with open(path, "x") as out:  # O_EXCL: a release is never overwritten
                out.write(HEADER + dump_yaml(body))
        except FileExistsError:
            raise ReleaseError(f"{self._display(path)} already exists; releases are never rewritten") from None
        return release, True

    def resolve(self, ref: str, digest: str, *, where: str) -> Release:
        """The pinned release, refused when its digest is not the pinned one."""
        release = self.get(ref)
        if release.digest != digest:
            raise ReleaseError(f"{where}: release {ref} has digest {release.digest}, but the stack pins {digest}"
                               f" (a release file was edited or the pin is wrong)")
        return release

    def _read(self, path: Path, name: str, version: int) -> Release:
        where = self._display(path)
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ReleaseError(f"{where}: not valid YAML: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("resources"), list):
            raise ReleaseError(f"{where}: not a release record (expected keys release, digest, resources)")
        if doc.get("release") != f"{name}@v{version}":
            raise ReleaseError(f"{where}: records release {doc.get('release')!r}, its path says {name}@v{version}")
        resources = tuple(doc["resources"])
        recorded, actual = doc.get("digest"), digest_of(resources)
        if recorded != actual:
            raise ReleaseError(f"{where}: content digest {actual} differs from the recorded {recorded}: "
                               f"the release was edited after it was created; releases are immutable")
        return Release(name, version, actual, str(doc.get("created", "")), str(doc.get("createdBy", "")),
                       str(doc.get("source", "")), resources)

    def _display(self, path: Path) -> str:
        try:
            return os.fspath(path.relative_to(self.root))
        except ValueError:
            return os.fspath(path)


@dataclass(frozen=True, slots=True)
class Pin:
    """A stack's `weir:release` + `weir:releaseDigest`."""

    ref: str
    digest: str


def parse_pin(config: dict[str, Any], source: str) -> Pin | None:
    """The stack's pin, None when it sets no `weir:release`; errors name the file and the key."""
    ref = config.get(RELEASE_KEY)
    if ref is None:
        return None
    try:
        parse_ref(ref if isinstance(ref, str) else "")
    except ReleaseError as exc:
        raise ReleaseError(f"{source}: key `{RELEASE_KEY}`: {exc}") from None
    digest = config.get(DIGEST_KEY)
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ReleaseError(f"{source}: key `{DIGEST_KEY}` must be the pinned release's sha256:<64 hex> digest "
                           f"(`meshctl release list` shows it), got {digest!r}")
    return Pin(ref, digest)


_PIN_LINE = re.compile(rf"^(\s*)({re.escape(RELEASE_KEY)}|{re.escape(DIGEST_KEY)}):.*$", re.MULTILINE)


def pin_text(stack_text: str, release: Release) -> str:
    """The stack file's text with its pin moved to `release`; comments and every other line unchanged."""
    if len(_PIN_LINE.findall(stack_text)) != 2:
        raise ReleaseError(f"the stack file must have one `{RELEASE_KEY}:` and one `{DIGEST_KEY}:` line to pin")

    def replace(match: re.Match[str]) -> str:
        value = release.ref if match[2] == RELEASE_KEY else release.digest
        return f"{match[1]}{match[2]}: {value}"

    return _PIN_LINE.sub(replace, stack_text)
