"""`meshctl status` certificate warnings: pure judgement of one proxy's `secrets` dump."""

from __future__ import annotations

import pytest

from mesh.local import certstatus

HEALTHY = {"state": "ACTIVE", "serial": "ab", "notAfter": "2030-01-01T00:00:00Z", "lifetimeSeconds": 86400,
           "expiresInSeconds": 50000, "rotation": {"consecutiveFailures": 0, "lastError": None}}


@pytest.mark.parametrize(("secrets", "warnings"), [
    (HEALTHY, []),
    ({**HEALTHY, "expiresInSeconds": 21601}, []),
    ({**HEALTHY, "expiresInSeconds": 21599},
     ["p: certificate expires in 6.0h, less than a quarter of its 1.0d lifetime: its renewal is overdue"]),
    ({**HEALTHY, "state": "EXPIRED", "expiresInSeconds": -5}, ["p: certificate ab expired at 2030-01-01T00:00:00Z"]),
    ({**HEALTHY, "rotation": {"consecutiveFailures": 1, "lastError": "refused"}},
     ["p: the last certificate renewal failed (1 in a row): refused"]),
    ({"state": "PENDING", "chain": []}, ["p: no workload certificate yet"]),
    ({"state": "NONE", "chain": []}, ["p: no workload certificate"]),
    ({"version": "abc", "view": {}}, []),  # not a secrets dump: nothing to say
])
def test_judge(secrets, warnings):
    assert certstatus.judge("p", secrets) == warnings


def test_human_durations():
    assert [certstatus.human(s) for s in (5, 90, 7200, 172800, -1)] == ["5s", "1.5m", "2.0h", "2.0d", "0s"]
