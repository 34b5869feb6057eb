"""Certificate health of a running environment's proxies, for `meshctl status`.

Each proxy's admin `config_dump?resource=secrets` (mesh.proxy.certagent.describe + its rotation state)
is read in parallel; `judge` turns one dump into warnings: no certificate yet, expired, less than
`EXPIRY_FRACTION` of its lifetime left (renewal happens at half, so it is overdue), or a last renewal
that failed. Pure apart from `collect`; mesh.cli prints the result.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mesh.local import environment, errors
from mesh.local import plan as plan_mod

EXPIRY_FRACTION = 0.25  # warn when less than a quarter of the certificate's lifetime is left
PROXY_ROLES = (plan_mod.ROLE_SIDECAR, plan_mod.ROLE_GATEWAY)


def human(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def judge(proxy: str, secrets: dict[str, Any]) -> list[str]:
    """Warnings about one proxy's certificate (none when it is healthy or the dump is not Weir's)."""
    state = secrets.get("state")
    if state is None:
        return []
    if state in ("PENDING", "NONE"):
        return [f"{proxy}: no workload certificate" + (" yet" if state == "PENDING" else "")]
    remaining, lifetime = float(secrets.get("expiresInSeconds", 0)), float(secrets.get("lifetimeSeconds", 0))
    warnings = []
    if state == "EXPIRED" or remaining <= 0:
        warnings.append(f"{proxy}: certificate {secrets.get('serial')} expired at {secrets.get('notAfter')}")
    elif remaining < EXPIRY_FRACTION * lifetime:
        warnings.append(f"{proxy}: certificate expires in {human(remaining)}, less than a quarter of its "
                        f"{human(lifetime)} lifetime: its renewal is overdue")
    rotation = secrets.get("rotation") or {}
    if rotation.get("consecutiveFailures"):
        warnings.append(f"{proxy}: the last certificate renewal failed ({rotation['consecutiveFailures']} in a "
                        f"row): {rotation.get('lastError')}")
    return warnings


def row(proxy: str, secrets: dict[str, Any]) -> dict[str, Any]:
    return {"proxy": proxy, "state": secrets.get("state"), "spiffeId": secrets.get("spiffeId"),
            "serial": secrets.get("serial"), "notAfter": secrets.get("notAfter"),
            "expiresIn": human(float(secrets["expiresInSeconds"])) if "expiresInSeconds" in secrets else None,
            "warnings": judge(proxy, secrets)}


def collect(env: environment.Environment) -> list[dict[str, Any]]:
    """One row per proxy process; an unreachable admin port gives a row with `error` and no warning (the
    process table already shows it not ready)."""
    names = [name for name, p in env.processes.items() if p["role"] in PROXY_ROLES]

    def fetch(name: str) -> dict[str, Any]:
        try:
            secrets = env.config_dump(env.processes[name]["workload"], "secrets")
        except errors.WeirError as exc:
            return {"proxy": name, "state": None, "error": str(exc), "warnings": []}
        return row(name, secrets if isinstance(secrets, dict) else {})

    with ThreadPoolExecutor(max_workers=min(16, len(names) or 1)) as pool:
        return list(pool.map(fetch, names))
