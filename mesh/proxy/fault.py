"""Fault injection (Istio HTTPFaultInjection), decided in the calling proxy before a request leaves it.

Delay first, then abort, as Envoy's fault filter does; each with its own percentage and an independent
draw from the injected RNG. Response flags: DI for an injected delay, FI for an injected abort; the abort
body is Envoy's `fault filter abort`.

Example: `Fault(delay_s=2.0, delay_percent=100)` holds every request 2 s, then forwards it;
`Fault(abort_status=503, abort_percent=10)` answers about one request in ten with 503 FI.
"""

from __future__ import annotations

import random

from mesh.view import model

ABORT_BODY = b"fault filter abort"


def decide(fault: model.Fault, rng: random.Random) -> tuple[float | None, int | None]:
    """(delay seconds or None, abort status or None) for one request."""
    delay = None
    if fault.delay_s is not None and fault.delay_percent > 0 and rng.random() * 100.0 < fault.delay_percent:
        delay = fault.delay_s
    abort = None
    if fault.abort_status is not None and fault.abort_percent > 0 and rng.random() * 100.0 < fault.abort_percent:
        abort = fault.abort_status
    return delay, abort
