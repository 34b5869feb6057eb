"""Keep-alive pool decisions over fake connections and an explicit clock."""

from __future__ import annotations

from types import SimpleNamespace

from mesh.proxy import pool


class Conn:
    def __init__(self, name: str, usable: bool = True) -> None:
        self.name = name
        self.usable = usable
        self.closed = False
        self.idle_since = 0.0
        self.opened_at = 0.0

    def is_usable(self) -> bool:
        return self.usable and not self.closed

    def close(self) -> None:
        self.closed = True


def pooled(*conns: Conn, now: float = 0.0) -> pool.EndpointPool:
    p = pool.EndpointPool(("10.0.0.1", 9080))
    for conn in conns:
        p.opening()
        p.release(conn, True, now)
    return p


def test_acquire_is_lifo():
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    p = pooled(a, b, c)
    assert [p.acquire(1.0).name for _ in range(3)] == ["c", "b", "a"]
    assert p.acquire(1.0) is None
    assert (p.active, p.reused) == (3, 3)


def test_idle_timeout_closes_instead_of_reusing():
    old, new = Conn("old"), Conn("new")
    p = pooled(old, now=0.0)
    p.opening()
    p.release(new, True, 30.0)
    assert p.acquire(pool.IDLE_TIMEOUT_S - 0.001).name == "new"
    assert p.acquire(pool.IDLE_TIMEOUT_S) is None
    assert old.closed


def test_max_age_closes_an_idle_connection_opened_too_long_ago():
    old, young = Conn("old"), Conn("young")
    young.opened_at = 50.0
    p = pooled(old, young, now=55.0)
    assert p.acquire(60.0, max_age=30.0).name == "young"  # opened 10 s ago
    assert p.acquire(60.0, max_age=30.0) is None and old.closed  # opened 60 s ago


def test_unusable_idle_connections_are_skipped_and_closed():
    dead, live = Conn("dead"), Conn("live")
    p = pooled(live, dead)
    dead.usable = False
    assert p.acquire(1.0) is live
    assert dead.closed and not p.idle


def test_max_idle_bounds_the_idle_set():
    conns = [Conn(str(i)) for i in range(pool.MAX_IDLE_PER_ENDPOINT + 2)]
    p = pooled(*conns)
    assert len(p.idle) == pool.MAX_IDLE_PER_ENDPOINT
    assert [c.closed for c in conns[-2:]] == [True, True]
    assert p.active == 0


def test_release_of_unreusable_or_unusable_closes():
    a, b = Conn("a"), Conn("b", usable=False)
    p = pool.EndpointPool(("h", 1))
    p.opening()
    p.opening()
    p.release(a, False, 0.0)
    p.release(b, True, 0.0)
    assert a.closed and b.closed and not p.idle and p.active == 0


def test_release_stamps_idle_since():
    a = Conn("a")
    pooled(a, now=42.0)
    assert a.idle_since == 42.0


def test_discard_removes_an_idle_connection_and_ignores_unknown_ones():
    a, b = Conn("a"), Conn("b")
    p = pooled(a)
    p.discard(a)
    p.discard(b)
    assert not p.idle


def test_close_closes_all_idle():
    a, b = Conn("a"), Conn("b")
    p = pooled(a, b)
    p.close()
    assert a.closed and b.closed and not p.idle


def test_repr_and_dump():
    p = pooled(Conn("a"), Conn("b"))
    p.acquire(1.0)
    assert repr(p) == "<EndpointPool 10.0.0.1:9080 idle=1 active=1 opened=2 reused=1>"
    pools = pool.Pools()
    assert pools.get(("h", 1)) is pools.get(("h", 1))
    pools.by_endpoint[("10.0.0.1", 9080)] = p
    assert pools.dump() == [
        {"endpoint": "10.0.0.1:9080", "tls": False, "sni": None, "idle": 1, "active": 1, "opened": 2, "reused": 1},
        {"endpoint": "h:1", "tls": False, "sni": None, "idle": 0, "active": 0, "opened": 0, "reused": 0},
    ]


def test_dump_names_each_tls_pool_by_its_sni():
    """One endpoint, two clusters: mesh pools are keyed by SNI too, and the dump tells them apart."""
    pools = pool.Pools()
    for subset in ("", "v2"):
        sni = f"outbound_.9080_.{subset}_.ratings.bookinfo.svc.cluster.local"
        pools.get(("10.0.0.1", 9080, ("mtls", (), sni)), SimpleNamespace(server_hostname=sni)).opening()
    assert [(p["endpoint"], p["tls"], p["sni"], p["active"]) for p in pools.dump()] == [
        ("10.0.0.1:9080", True, "outbound_.9080_._.ratings.bookinfo.svc.cluster.local", 1),
        ("10.0.0.1:9080", True, "outbound_.9080_.v2_.ratings.bookinfo.svc.cluster.local", 1),
    ]


def test_sweep_closes_stale_idle_and_forgets_pools_outside_the_view():
    kept, stale, gone, busy_key = ("10.0.0.1", 9080), ("10.0.0.1", 9080), ("1.2.3.4", 80), ("5.6.7.8", 80)
    pools = pool.Pools()
    fresh, old, passthrough = Conn("fresh"), Conn("old"), Conn("passthrough")
    for key, conn, at in ((kept, old, 0.0), (stale, fresh, 50.0), (gone, passthrough, 50.0)):
        pools.get(key).opening()
        pools.get(key).release(conn, True, at)
    pools.get(busy_key).opening()  # a request in flight to a host outside the view
    closed = pools.sweep(pool.IDLE_TIMEOUT_S + 1.0, frozenset({kept}))
    assert closed == 2 and old.closed and passthrough.closed and not fresh.closed
    assert set(pools.by_endpoint) == {kept, busy_key}  # in flight: kept until it is released


class _Waiter:
    def __init__(self, done: bool = False, tries: int = 1) -> None:
        self.done, self.tries = done, tries


class _Forwarding:
    def __init__(self) -> None:
        self.woken: list = []
        self.loop = self

    def call_soon(self, callback, *args) -> None:
        self.woken.append(args[0])

    def dispatch_pending(self, exchange, tries) -> None:  # pragma: no cover - only referenced
        pass


def test_tls_pools_cap_connects_and_wake_the_oldest_live_waiter(monkeypatch):
    monkeypatch.setattr(pool, "WAITING_COMPACT_AT", 3)
    plain, secure = pool.EndpointPool(("h", 1)), pool.EndpointPool(("h", 1, ("mtls", (), "")), origin=object())
    plain.connecting = secure.connecting = pool.MAX_TLS_CONNECTING
    assert plain.may_connect() and not secure.may_connect()  # only TLS connects are capped
    fwd = _Forwarding()
    gone, moved_on, live = _Waiter(done=True), _Waiter(tries=2), _Waiter()
    for waiter in (gone, moved_on, live):
        secure.wait(fwd, waiter)
    moved_on.tries = 3  # that try was given up for a retry: its entry is stale
    newest = _Waiter()
    secure.wait(fwd, newest)  # at the compaction bound: stale entries dropped first
    assert [w for _, w, _ in secure.waiting] == [live, newest]
    secure.wake()
    assert fwd.woken == [live] and len(secure.waiting) == 1


def test_a_pool_the_sweep_forgot_closes_what_a_late_request_gives_back():
    """A request queued when its endpoint left the view still holds the pool and opens a connection there:
    released, it is closed, not kept where no sweep would ever reach it (holding a maxConnections slot)."""
    pools = pool.Pools()
    gone = pools.get(("10.0.0.9", 9080, "outbound|9080||books"))
    pools.sweep(0.0, frozenset())
    assert pools.by_endpoint == {} and gone.retired
    late = Conn("late")
    gone.opening()
    gone.release(late, True, 1.0)
    assert late.closed and not gone.idle and gone.active == 0
