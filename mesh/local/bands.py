"""Bands: the inclusive `[min, max]` ranges a scenario's expectation states, validated, tested and printed.

A band is a pair with `null` (None) for an open side. `ShareBand`, `MsBand` and `CountBand` are the pydantic
types mesh.local.expectations validates the `weir.dev/expect` annotation with (shares are fractions in
[0, 1], latencies are >= 0 ms, counts are >= 0 or `requests` for the request count); mesh.local.judgement
then tests observed values against them (`in_band`) and names them in failures (`band_text`).
`miss_probability` says how often a healthy mesh would fail a share band: the binomial chance of a false
failure, which a scenario keeps under 1e-3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BeforeValidator

from mesh.api.errors import invalid


def _band_pair(value: Any) -> Any:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise invalid(f"invalid band {value!r}: expected [min, max] (null for an open side)")
    return tuple(value)


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(f"invalid {what} {value!r}: expected a number or null")
    return float(value)


def _ordered(low: Any, high: Any) -> None:
    if isinstance(low, float) and isinstance(high, float) and low > high:
        raise invalid(f"invalid band [{low:g}, {high:g}]: min is greater than max")


def _share_band(value: Any) -> tuple[float | None, float | None]:
    low, high = (_number(v, "share") for v in _band_pair(value))
    for v in (low, high):
        if v is not None and not 0.0 <= v <= 1.0:
            raise invalid(f"invalid share {v:g}: must be a fraction in [0, 1]")
    _ordered(low, high)
    return low, high


def _ms_band(value: Any) -> tuple[float | None, float | None]:
    low, high = (_number(v, "latency") for v in _band_pair(value))
    if any(v is not None and v < 0 for v in (low, high)):
        raise invalid("invalid latency: must be >= 0 ms")
    _ordered(low, high)
    return low, high


def _count_bound(value: Any) -> float | str | None:
    if value == "requests":
        return value
    bound = _number(value, "count (a number, requests or null)")
    if bound is not None and bound < 0:
        raise invalid(f"invalid count {bound:g}: must be >= 0")
    return bound


def _count_band(value: Any) -> tuple[float | str | None, float | str | None]:
    low, high = (_count_bound(v) for v in _band_pair(value))
    _ordered(low, high)
    return low, high


ShareBand = Annotated[tuple[float | None, float | None], BeforeValidator(_share_band)]
MsBand = Annotated[tuple[float | None, float | None], BeforeValidator(_ms_band)]
CountBand = Annotated[tuple[float | str | None, float | str | None], BeforeValidator(_count_band)]


def in_band(value: float, band: tuple[float | None, float | None]) -> bool:
    low, high = band
    eps = 1e-9  # shares such as 41/50 against a band edge written in decimal
    return (low is None or value >= low - eps) and (high is None or value <= high + eps)


def band_text(band: Sequence[Any]) -> str:
    return "[" + ", ".join("null" if v is None else v if isinstance(v, str) else f"{v:g}" for v in band) + "]"


def miss_probability(requests: int, p: float, band: tuple[float | None, float | None]) -> float:
    """The chance that a share with true probability `p` over `requests` trials falls outside `band`:
    how often a healthy mesh would fail that band (binomial, exact)."""
    miss = 0.0
    for k in range(requests + 1):
        if not in_band(k / requests, band):
            miss += math.comb(requests, k) * p**k * (1 - p) ** (requests - k)
    return miss
