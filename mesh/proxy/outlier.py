"""Outlier detection: Envoy's consecutive-5xx, consecutive-gateway-failure and consecutive-local-origin-failure
detectors, per client proxy per cluster, configured by Istio's DestinationRule `outlierDetection`
(`mesh.view.model.OutlierDetection`).

Every try reports its outcome: the upstream's status, or a failure the proxy saw itself (connect failure,
reset, timeout: `local`). By default these count as 503/504, as Envoy counts locally originated errors when
it does not split them; with `splitExternalLocalOriginErrors` they count only in their own detector
(`consecutiveLocalOriginFailures` in a row eject), the 5xx and gateway detectors see only answers, and a
try that gets a connection, new or pooled, resets the local count (`connected`: Envoy's local-origin
connect success). A host reaching a threshold is ejected at once, for `baseEjectionTime × times
ejected` (capped at 300 s), unless `maxEjectionPercent` of the hosts are already out (Envoy lets the first one go whatever
the percentage). Ejected hosts return at the first interval sweep after their time is up; each sweep
that finds a host in service lowers its ejection count. With `minHealthPercent` > 0 and fewer healthy
hosts than that, the cluster panics and routes to every host; with no healthy host and no panic, a
request gets 503 UH.

Worked example, `consecutive5xxErrors: 2, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent:
100`, hosts A and B: B answers 500, 500 at t=1 → ejected until t=31 (picks go to A only); the sweep at
t=40 returns B (counter `ejections_active` back to 0); two more 5xx at t=45 eject B until t=105 (60 s,
second ejection). With `splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2`, two
connection refusals from B in a row eject it; a 503 answer in between counts in the 5xx detector only; a
try that connects to B in between starts B's local count again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mesh.view import model

MAX_EJECTION_TIME_S = 300.0  # Envoy's default max_ejection_time
GATEWAY_ERRORS = frozenset({502, 503, 504})
CONSECUTIVE_5XX = "consecutive_5xx"
CONSECUTIVE_GATEWAY = "consecutive_gateway_failure"
CONSECUTIVE_LOCAL_ORIGIN = "consecutive_local_origin_failure"


class HostState:
    __slots__ = ("consecutive_5xx", "consecutive_gateway", "consecutive_local", "ejections", "ejected_until")

    def __init__(self) -> None:
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.consecutive_local = 0  # local-origin failures in a row (split mode only)
        self.ejections = 0  # times ejected, lowered by one per sweep in service
        self.ejected_until = 0.0


class OutlierDetector:
    """The detector of one cluster: host states, the ejected set, and its counters."""

    def __init__(self, config: model.OutlierDetection, endpoints: Iterable[model.Endpoint],
                 clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.hosts = {endpoint: HostState() for endpoint in endpoints}
        self._by_id = {id(endpoint): state for endpoint, state in self.hosts.items()}  # the per-try lookup
        self.ejected: set[model.Endpoint] = set()
        self.version = 0  # changes whenever the ejected set does: balancers over healthy hosts follow it
        self.next_sweep = clock() + config.interval_s
        self.stats = {f"{what}_{kind}": 0 for what in ("detected", "enforced")
                      for kind in (CONSECUTIVE_5XX, CONSECUTIVE_GATEWAY, CONSECUTIVE_LOCAL_ORIGIN)}
        self.stats["overflow"] = 0
        # The detector of the next view (`adopt`): tries from before a push report here, and what they
        # decide must land in the detector in force.
        self.successor: OutlierDetector | None = None

    def report(self, endpoint: model.Endpoint, status: int, local: bool = False) -> None:
        """A try's outcome: the upstream's `status`, or (`local`) a failure seen here, reported as 503/504
        and counted so unless local-origin failures are split."""
        state = self._by_id.get(id(endpoint))
        if state is None:
            return
        config = self.config
        if local and config.split_local_origin:
            state.consecutive_local += 1
            if config.consecutive_local_origin and state.consecutive_local >= config.consecutive_local_origin:
                self._detected(endpoint, state, CONSECUTIVE_LOCAL_ORIGIN)
            return
        if status < 500:
            state.consecutive_5xx = state.consecutive_gateway = 0
            return
        state.consecutive_5xx += 1
        state.consecutive_gateway = state.consecutive_gateway + 1 if status in GATEWAY_ERRORS else 0
        if config.consecutive_gateway_errors and state.consecutive_gateway >= config.consecutive_gateway_errors:
            self._detected(endpoint, state, CONSECUTIVE_GATEWAY)
        elif config.consecutive_5xx and state.consecutive_5xx >= config.consecutive_5xx:
            self._detected(endpoint, state, CONSECUTIVE_5XX)

    def connected(self, endpoint: model.Endpoint) -> None:
        """A try got a connection to `endpoint` (split mode only: `CompiledCluster.splits_local`)."""
        state = self._by_id.get(id(endpoint))
        if state is not None:
            state.consecutive_local = 0

    def _detected(self, endpoint: model.Endpoint, state: HostState, kind: str) -> None:
        if self.successor is not None:  # a try from before a config push: the detector in force decides
            live = self.successor
            while live.successor is not None:
                live = live.successor
            if endpoint in live.hosts:
                live._detected(endpoint, live.hosts[endpoint], kind)
            return
        self.stats[f"detected_{kind}"] += 1
        state.consecutive_5xx = state.consecutive_gateway = state.consecutive_local = 0
        if endpoint in self.ejected:
            return
        if len(self.ejected) * 100 >= self.config.max_ejection_percent * len(self.hosts):
            self.stats["overflow"] += 1
            return
        state.ejections += 1
        state.ejected_until = self.clock() + min(MAX_EJECTION_TIME_S,
                                                 self.config.base_ejection_time_s * state.ejections)
        self.ejected.add(endpoint)
        self.version += 1
        self.stats[f"enforced_{kind}"] += 1

    def sweep(self, now: float) -> None:
        """The interval timer, run lazily by the next pick: return ejected hosts whose time is up."""
        if now < self.next_sweep:
            return
        interval = self.config.interval_s
        sweeps = int((now - self.next_sweep) // interval) + 1  # every interval since the last one
        self.next_sweep += sweeps * interval
        for endpoint, state in self.hosts.items():
            if endpoint in self.ejected:
                if now >= state.ejected_until:
                    self.ejected.discard(endpoint)
                    self.version += 1
            elif state.ejections > 0:
                state.ejections = max(0, state.ejections - sweeps)

    def healthy(self, endpoints: Iterable[model.Endpoint]) -> list[model.Endpoint] | None:
        """The endpoints to balance over now; None when every one is out (503 UH)."""
        all_hosts = list(endpoints)
        healthy = [e for e in all_hosts if e not in self.ejected]
        if all_hosts and len(healthy) * 100 < self.config.min_health_percent * len(all_hosts):
            return all_hosts  # panic mode: better any host than none
        return healthy or None

    def adopt(self, old: OutlierDetector) -> None:
        """Carry the state of hosts still present over a view change (same cluster, new view)."""
        local_changed = (old.config.split_local_origin, old.config.consecutive_local_origin) != (
            self.config.split_local_origin, self.config.consecutive_local_origin)
        for endpoint, state in old.hosts.items():
            if endpoint in self.hosts:
                if local_changed:
                    state.consecutive_local = 0  # counted under other rules: a lowered threshold must not fire
                self.hosts[endpoint] = state
                if endpoint in old.ejected:
                    self.ejected.add(endpoint)
        self._by_id = {id(endpoint): state for endpoint, state in self.hosts.items()}
        self.next_sweep = old.next_sweep
        self.stats = dict(old.stats)
        self.version = old.version + 1
        old.successor = self

    def dump(self, endpoint: model.Endpoint, now: float) -> dict:
        state = self.hosts.get(endpoint)
        if state is None or endpoint not in self.ejected:
            return {"health": "HEALTHY"}
        return {"health": "EJECTED", "ejected_for_s": round(max(0.0, state.ejected_until - now), 3),
                "times_ejected": state.ejections}

    def __repr__(self) -> str:
        return f"<OutlierDetector hosts={len(self.hosts)} ejected={len(self.ejected)} version={self.version}>"
