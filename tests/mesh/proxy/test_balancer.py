"""Load balancers over plain endpoint tuples with a seeded RNG."""

from __future__ import annotations

import collections
import math
import random

import pytest

from mesh.proxy import balancer
from mesh.view import model


def endpoints(count: int, **weights: int) -> list[model.Endpoint]:
    return [model.Endpoint(f"10.0.0.{i}", 9080, weight=weights.get(f"e{i}", 1)) for i in range(count)]


@pytest.mark.parametrize("policy, kind", [
    ("ROUND_ROBIN", balancer.RoundRobin), ("LEAST_REQUEST", balancer.LeastRequest),
    ("RANDOM", balancer.RandomPick), ("RING_HASH", balancer.RingHash), ("UNSET", balancer.LeastRequest),
])
def test_make_balancer_by_policy(policy, kind):
    assert type(balancer.make_balancer(model.LoadBalancer(policy), endpoints(2), random.Random(1))) is kind


@pytest.mark.parametrize("kind", [balancer.RoundRobin, balancer.LeastRequest, balancer.RandomPick,
                                  balancer.RingHash])
def test_no_endpoints_picks_nothing(kind):
    assert kind((), random.Random(1)).pick("key") is None


def test_round_robin_cycles_in_order_with_weights_by_repetition():
    a, b, c = endpoints(3, e1=2)
    rr = balancer.RoundRobin((a, b, c), random.Random(3))
    picks = [rr.pick() for _ in range(12)]
    cycle = [a, b, b, c]
    assert any(picks == [cycle[(start + i) % 4] for i in range(12)] for start in range(4)), picks


def test_round_robin_start_offset_depends_on_the_rng():
    eps = endpoints(5)
    firsts = {balancer.RoundRobin(eps, random.Random(seed)).pick() for seed in range(40)}
    assert len(firsts) > 1


def test_least_request_prefers_the_less_loaded_of_two():
    a, b = endpoints(2)
    lr = balancer.LeastRequest((a, b), random.Random(1))
    lr.started(a)
    lr.started(a)
    assert {lr.pick() for _ in range(50)} == {b}
    lr.finished(a)
    lr.finished(a)
    lr.finished(a)  # never below zero
    assert lr.in_flight(a) == 0
    assert {lr.pick() for _ in range(50)} == {a, b}, "a tie goes to either"


def test_least_request_among_many_never_picks_the_busiest():
    eps = endpoints(4)
    lr = balancer.LeastRequest(eps, random.Random(2))
    for _ in range(5):
        lr.started(eps[0])
    picks = collections.Counter(lr.pick() for _ in range(2000))
    assert picks[eps[0]] == 0
    assert all(picks[e] > 400 for e in eps[1:])


def within_band(counts: collections.Counter, keys, n: int) -> bool:
    p = 1 / len(keys)
    band = 4.5 * math.sqrt(n * p * (1 - p))
    return all(abs(counts[k] - n * p) <= band for k in keys)


def test_random_is_uniform_within_a_band():
    eps = endpoints(3)
    rnd = balancer.RandomPick(eps, random.Random(4))
    counts = collections.Counter(rnd.pick() for _ in range(30_000))
    assert within_band(counts, eps, 30_000)


def test_ring_hash_is_stable_for_a_key():
    eps = endpoints(3)
    ring = balancer.RingHash(eps, random.Random(1))
    again = balancer.RingHash(list(reversed(eps)), random.Random(99))
    for key in ("jason", "bob", "10.1.2.3"):
        assert len({ring.pick(key) for _ in range(20)}) == 1
        assert ring.pick(key) == again.pick(key), "the ring depends on endpoints, not on order or RNG"


@pytest.mark.parametrize("count", [3, 5])
def test_ring_hash_adding_an_endpoint_moves_about_one_nth_of_keys(count):
    eps = endpoints(count + 1)
    before = balancer.RingHash(eps[:count], random.Random(1))
    after = balancer.RingHash(eps, random.Random(1))
    keys = [f"user-{i}" for i in range(10_000)]
    moved = [k for k in keys if before.pick(k) != after.pick(k)]
    assert 0.5 / (count + 1) <= len(moved) / len(keys) <= 1.5 / count
    assert collections.Counter(after.pick(k) for k in moved).most_common(1)[0][0] == eps[count]


def test_ring_hash_spreads_keys_over_endpoints():
    eps = endpoints(3)
    ring = balancer.RingHash(eps, random.Random(1))
    counts = collections.Counter(ring.pick(f"k{i}") for i in range(9000))
    assert all(2000 < counts[e] < 4000 for e in eps)


def test_ring_hash_without_a_key_is_random():
    eps = endpoints(3)
    ring = balancer.RingHash(eps, random.Random(5))
    counts = collections.Counter(ring.pick(None) for _ in range(30_000))
    assert within_band(counts, eps, 30_000)


@pytest.mark.parametrize("kind", [balancer.RoundRobin, balancer.LeastRequest, balancer.RandomPick,
                                  balancer.RingHash])
@pytest.mark.parametrize("key", [None, "jason"])
def test_avoid_picks_another_endpoint(kind, key):
    eps = endpoints(3)
    lb = kind(eps, random.Random(6))
    for i in range(60):
        avoid = lb.pick(key)
        assert lb.pick(key, avoid=avoid) != avoid, i


@pytest.mark.parametrize("kind", [balancer.RoundRobin, balancer.LeastRequest, balancer.RandomPick,
                                  balancer.RingHash])
def test_avoid_with_a_single_endpoint_still_answers(kind):
    (only,) = endpoints(1)
    assert kind((only,), random.Random(1)).pick("k", avoid=only) == only


def test_repr_names_the_policy_and_size():
    assert repr(balancer.RandomPick(endpoints(2), random.Random(1))) == "<RandomPick endpoints=2>"


@pytest.mark.parametrize("kind", [balancer.RoundRobin, balancer.LeastRequest, balancer.RandomPick,
                                  balancer.RingHash])
def test_avoid_when_every_listed_endpoint_is_the_same_host(kind):
    (only,) = endpoints(1)
    assert kind((only, only), random.Random(1)).pick("k", avoid=only) == only
