"""Kubernetes objects as data: pure functions returning plain dicts, validated against the Kubernetes schema
in tests. `bookinfo` describes the demo app once; `injection.inject_sidecar` is the one sidecar injector.
Readers: `infra/` (Pulumi) and `meshctl render`; `mesh.local` reads the same Deployments to plan processes.
"""
