"""The data plane: sidecar and gateway proxy on asyncio + uvloop + httptools.

Flow: `downstream` (client connection) → `forwarding` (route decision via `routing`, `balancer`) →
`exchange` (one request/response) → `upstream` (pooled connection, `pool`). `server` binds listeners
from the view received by `discovery`; `admin` serves readiness, stats and config dumps.
"""
