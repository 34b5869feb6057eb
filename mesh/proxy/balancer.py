"""Load balancers: which endpoint of a cluster serves a request (Envoy's LB policies, Istio's names).

Pure decisions over plain state with an injected `random.Random`:
- ROUND_ROBIN: endpoints in turn (weights honoured by repetition);
- LEAST_REQUEST: power of two random choices on active request counts (Envoy's default algorithm);
- RANDOM: uniform pick;
- RING_HASH: consistent hash ring (Istio consistentHash) keyed by header, cookie, source IP or query
  parameter; with no key the pick is random, as in Envoy.

Example: a ring of 3 endpoints with 1024 points; `pick(key="jason")` always returns the same endpoint
while the endpoint set is unchanged, and only ~1/3 of keys move when one endpoint is added.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Sequence

from mesh.view import model


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Balancer:
    __slots__ = ("endpoints", "rng")
    tracks_load = False  # only LEAST_REQUEST needs started/finished: the hot path skips the calls

    def __init__(self, endpoints: Sequence[model.Endpoint], rng: random.Random) -> None:
        self.endpoints = tuple(endpoints)
        self.rng = rng

    def pick(self, hash_key: str | None = None, avoid: model.Endpoint | None = None) -> model.Endpoint | None:
        raise NotImplementedError

    def started(self, endpoint: model.Endpoint) -> None:
        """A request was sent to `endpoint` (only LEAST_REQUEST keeps count)."""

    def finished(self, endpoint: model.Endpoint) -> None:
        """A request to `endpoint` ended."""

    def _other(self, chosen: model.Endpoint, avoid: model.Endpoint | None) -> model.Endpoint:
        if avoid is None or chosen != avoid or len(self.endpoints) < 2:
            return chosen
        others = [e for e in self.endpoints if e != avoid]
        return self.rng.choice(others) if others else chosen

    def __repr__(self) -> str:
        return f"<{type(self).__name__} endpoints={len(self.endpoints)}>"


class RoundRobin(Balancer):
    __slots__ = ("_order", "_next")

    def __init__(self, endpoints: Sequence[model.Endpoint], rng: random.Random) -> None:
        super().__init__(endpoints, rng)
        self._order = [e for e in self.endpoints for _ in range(max(1, e.weight))]
        # Start at a random offset so that many proxies don't all hit the first endpoint together.
        self._next = rng.randrange(len(self._order)) if self._order else 0

    def pick(self, hash_key: str | None = None, avoid: model.Endpoint | None = None) -> model.Endpoint | None:
        order = self._order
        if not order:
            return None
        index = self._next % len(order)
        chosen = order[index]
        if avoid is not None and chosen == avoid:
            # Next one in turn that is another host; bounded by one lap (all may be the same host).
            for step in range(1, len(order)):
                if order[(index + step) % len(order)] != avoid:
                    index = (index + step) % len(order)
                    chosen = order[index]
                    break
        self._next = index + 1
        return chosen


class LeastRequest(Balancer):
    __slots__ = ("active",)
    tracks_load = True

    def __init__(self, endpoints: Sequence[model.Endpoint], rng: random.Random) -> None:
        super().__init__(endpoints, rng)
        # Keyed by id(): endpoints are the view's own objects, and hashing a dataclass per request costs.
        self.active: dict[int, int] = {id(e): 0 for e in self.endpoints}

    def pick(self, hash_key: str | None = None, avoid: model.Endpoint | None = None) -> model.Endpoint | None:
        endpoints = self.endpoints
        if not endpoints:
            return None
        if len(endpoints) == 1:
            return endpoints[0]
        first, second = self.rng.sample(endpoints, 2)
        active = self.active
        chosen = first if active.get(id(first), 0) <= active.get(id(second), 0) else second
        return self._other(chosen, avoid)

    def in_flight(self, endpoint: model.Endpoint) -> int:
        return self.active.get(id(endpoint), 0)

    def started(self, endpoint: model.Endpoint) -> None:
        key = id(endpoint)
        self.active[key] = self.active.get(key, 0) + 1

    def finished(self, endpoint: model.Endpoint) -> None:
        key = id(endpoint)
        count = self.active.get(key, 0)
        if count > 0:
            self.active[key] = count - 1


class RandomPick(Balancer):
    __slots__ = ()

    def pick(self, hash_key: str | None = None, avoid: model.Endpoint | None = None) -> model.Endpoint | None:
        if not self.endpoints:
            return None
        return self._other(self.rng.choice(self.endpoints), avoid)


class RingHash(Balancer):
    __slots__ = ("_points", "_owners")

    def __init__(self, endpoints: Sequence[model.Endpoint], rng: random.Random, ring_size: int = 1024) -> None:
        super().__init__(endpoints, rng)
        ring: list[tuple[int, model.Endpoint]] = []
        if self.endpoints:
            total_weight = sum(max(1, e.weight) for e in self.endpoints)
            for endpoint in self.endpoints:
                replicas = max(1, ring_size * max(1, endpoint.weight) // total_weight)
                name = f"{endpoint.address}:{endpoint.port}"
                ring.extend((_hash(f"{name}_{i}"), endpoint) for i in range(replicas))
        ring.sort(key=lambda point: point[0])
        self._points = [point for point, _ in ring]
        self._owners = [owner for _, owner in ring]

    def pick(self, hash_key: str | None = None, avoid: model.Endpoint | None = None) -> model.Endpoint | None:
        if not self._points:
            return None
        if hash_key is None:
            return self._other(self.rng.choice(self.endpoints), avoid)
        owners = self._owners
        index = bisect.bisect_left(self._points, _hash(hash_key)) % len(owners)
        if avoid is not None and owners[index] == avoid:
            # Like Envoy on a retry: walk on along the ring to the next other host.
            for step in range(1, len(owners)):
                if owners[(index + step) % len(owners)] != avoid:
                    return owners[(index + step) % len(owners)]
        return owners[index]


def make_balancer(lb: model.LoadBalancer, endpoints: Sequence[model.Endpoint], rng: random.Random) -> Balancer:
    if lb.policy == "RING_HASH":
        return RingHash(endpoints, rng, lb.ring_size)
    if lb.policy == "RANDOM":
        return RandomPick(endpoints, rng)
    if lb.policy == "ROUND_ROBIN":
        return RoundRobin(endpoints, rng)
    return LeastRequest(endpoints, rng)
