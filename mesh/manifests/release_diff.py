"""Resource-level difference between what two environments run (`meshctl diff ENV_A ENV_B`).

Resources are compared by key (`Kind/namespace/name`); a changed one carries a unified diff of its YAML.
Annotations count: the `weir.dev/expect` annotation is part of what a release promises.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from mesh.manifests.releases import Obj, dump_yaml, resource_key

ADDED = "added"
REMOVED = "removed"
CHANGED = "changed"


@dataclass(frozen=True, slots=True)
class ResourceDiff:
    key: str
    change: str  # ADDED (only in B) | REMOVED (only in A) | CHANGED
    lines: tuple[str, ...] = ()  # unified diff of the YAML, for CHANGED

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "change": self.change, "diff": list(self.lines)}


def diff(a: Iterable[Obj], b: Iterable[Obj], *, a_name: str = "a", b_name: str = "b") -> list[ResourceDiff]:
    """What changes going from `a` to `b`, sorted by key; empty when both hold the same resources."""
    left = {resource_key(r): r for r in a}
    right = {resource_key(r): r for r in b}
    out = []
    for key in sorted(left.keys() | right.keys()):
        if key not in right:
            out.append(ResourceDiff(key, REMOVED))
        elif key not in left:
            out.append(ResourceDiff(key, ADDED))
        elif left[key] != right[key]:
            lines = difflib.unified_diff(_yaml(left[key]), _yaml(right[key]), f"{a_name}/{key}", f"{b_name}/{key}",
                                         lineterm="")
            out.append(ResourceDiff(key, CHANGED, tuple(lines)))
    return out


def _yaml(obj: Obj) -> list[str]:
    return dump_yaml(obj).splitlines()
