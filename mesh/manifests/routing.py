"""A routing file (Istio YAML) as custom resources: loaded and validated by `mesh.api` (the one parser),
written back with `mesh.api.dump`, each with its namespace set (documents without one go to bookinfo's).
"""

from __future__ import annotations

import os
from typing import Any

import mesh.api as api
from mesh.manifests import bookinfo

Obj = dict[str, Any]


def custom_resources(routing_file: str | os.PathLike[str], namespace: str = bookinfo.NAMESPACE) -> list[Obj]:
    """Every resource of the file, in file order; a bad file raises `mesh.api.ConfigError`."""
    out = []
    for resource in api.load_files([routing_file], default_namespace=namespace):
        obj = api.dump(resource)
        obj["metadata"].setdefault("namespace", namespace)
        out.append(obj)
    return out
