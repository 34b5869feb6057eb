"""Pulumi ComponentResources for GKE (cluster, platform, workloads, routing). Imports only `mesh.api`
and `mesh.manifests` (DESIGN.md principle 9)."""
