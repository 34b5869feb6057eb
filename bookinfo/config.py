"""Settings of one bookinfo-lite process, read once from flags and environment.

Owns the call table (which app calls which service, with which URL variable and timeout) and the frozen
`Settings` that `__main__` hands to the app module; `calls.Callee` describes the one service an app calls.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bookinfo import APPS, VERSIONS, calls

DEFAULT_PORT = 9080
DEFAULT_HOST = "0.0.0.0"

# app -> (callee service, URL variable, default URL, client timeout in seconds); no app retries.
CALL_TABLE: dict[str, tuple[str, str, str, float]] = {
    "ui": ("gw", "GW_URL", "http://gw:9080", 5.0),
    "gw": ("books", "BOOKS_URL", "http://books:9080", 3.0),
    "books": ("ratings", "RATINGS_URL", "http://ratings:9080", 10.0),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a process needs; tests build it directly."""

    app: str
    version: str = "v1"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    chaos_port: int | None = None
    proxy: str | None = None  # HTTP forward proxy (the sidecar's outbound port), from HTTP_PROXY
    callee: calls.Callee | None = None

    def __post_init__(self) -> None:
        if self.app not in APPS:
            raise ValueError(f"unknown app {self.app!r}; expected one of {', '.join(APPS)}")
        if self.version not in VERSIONS:
            raise ValueError(f"unknown version {self.version!r}; expected one of {', '.join(VERSIONS)}")


def callee_for(app: str, env: Mapping[str, str]) -> calls.Callee | None:
    """The service `app` calls, its URL from `env`; `CALL_TIMEOUT` overrides the table's timeout."""
    entry = CALL_TABLE.get(app)
    if entry is None:
        return None
    service, variable, default_url, timeout = entry
    if env.get("CALL_TIMEOUT"):
        timeout = float(env["CALL_TIMEOUT"])
    return calls.Callee(service, env.get(variable) or default_url, timeout)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bookinfo", description="Run one bookinfo-lite app.")
    parser.add_argument("--app", choices=APPS, help="which app (env APP)")
    parser.add_argument("--version", choices=VERSIONS, help="which version (env VERSION)")
    parser.add_argument("--host", help=f"listen address (env HOST, default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, help=f"listen port (env PORT, default {DEFAULT_PORT})")
    return parser


def from_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Flags win over environment; environment wins over defaults."""
    env = os.environ if env is None else env
    parser = _parser()
    args = parser.parse_args(argv)
    app = args.app or env.get("APP")
    if not app:
        parser.error("--app (or APP) is required")
    try:
        chaos_port = env.get("CHAOS_PORT")
        return Settings(
            app=app,
            version=args.version or env.get("VERSION") or "v1",
            host=args.host or env.get("HOST") or DEFAULT_HOST,
            port=args.port if args.port is not None else int(env.get("PORT") or DEFAULT_PORT),
            chaos_port=int(chaos_port) if chaos_port else None,
            proxy=env.get("HTTP_PROXY") or env.get("http_proxy") or None,
            callee=callee_for(app, env),
        )
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
