"""Weir's embedded runtime: the whole mesh as local processes on loopback.

Flow: `stack` (settings) → `plan` (process specs) → `runtime` (client: up/down/status) spawns
`supervisor`, which runs the processes, writes `state.json` and `registry.json` (`statedir`, `registry`).
"""
