"""xoshiro256** in Python: the reference the compiled id pool (mesh.proxy._speedups.TraceIds) is checked against.

The generator as Blackman and Vigna publish it (https://prng.di.unimi.it/xoshiro256starstar.c), on Python ints
masked to 64 bits, seeded as the compiled code seeds it: 256 bits from `rng.getrandbits(256)`, the low 64 bits
the first word. `XoshiroTracer` is the pure-Python `Tracer` with its id pool filled by it, so the two
implementations of `begin` can be compared draw for draw.
"""

from __future__ import annotations

import random

from mesh.proxy import tracing

MASK = (1 << 64) - 1


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & MASK


class Xoshiro256:
    def __init__(self, seed: int) -> None:
        self.s = [(seed >> (64 * i)) & MASK for i in range(4)]

    def next(self) -> int:
        s = self.s
        result = (_rotl((s[1] * 5) & MASK, 7) * 9) & MASK
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return result


class XoshiroTracer(tracing.Tracer):
    """The pure-Python tracer (make it with `tracing._speedups` None), its pool drawn as the compiled one's."""

    __slots__ = ("_xoshiro",)

    def __init__(self, sampling_percent: float, rng: random.Random) -> None:
        super().__init__(sampling_percent, rng)
        self._xoshiro = Xoshiro256(rng.getrandbits(256))

    def _refill(self) -> bytes:
        self._pool = b"".join(b"%016x" % self._xoshiro.next() for _ in range(tracing.ID_POOL_HEX // 16))
        self._used = 0
        return self._pool
