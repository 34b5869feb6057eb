"""The per-proxy view: the contract between `mesh.control` (which builds it) and `mesh.proxy` (which runs it)."""
