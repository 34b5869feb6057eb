"""`meshctl up` returns once the proxies serve what it applied: Environment.wait_synced, with a fake clock."""

from __future__ import annotations

from mesh.local import environment


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def env_with(answers: list[bool]) -> environment.Environment:
    class Scripted(environment.Environment):  # `synced` scripted: no control plane to ask
        def synced(self) -> bool:
            return answers.pop(0) if answers else False

    return Scripted(stack="dev", state=None, pid=0, doc={})


def test_returns_as_soon_as_every_proxy_acked():
    time = FakeTime()
    assert env_with([False, False, True]).wait_synced(10.0, time.clock, time.sleep)
    assert time.sleeps == [environment.SYNC_POLL_S] * 2


def test_gives_up_at_the_timeout_without_raising():
    time = FakeTime()
    assert not env_with([]).wait_synced(1.0, time.clock, time.sleep)
    assert 1.0 <= time.now < 1.0 + 2 * environment.SYNC_POLL_S
