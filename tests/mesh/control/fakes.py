"""Test doubles for push and discovery: a fake clock and a snapshot whose views are given directly."""

from __future__ import annotations

from dataclasses import dataclass, field

from mesh.view import model


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class FakeSnapshot:
    revision: int
    routes: tuple[str, ...] = ()  # every proxy's view gets one route table per entry


@dataclass
class FakeBuilder:
    calls: list[tuple[int, str]] = field(default_factory=list)

    def __call__(self, snap: FakeSnapshot, node) -> model.ProxyView:
        self.calls.append((snap.revision, node.id))
        tables = tuple(model.RouteTable(name, ()) for name in snap.routes)
        return model.ProxyView(proxy=node.id, route_tables=tables)
