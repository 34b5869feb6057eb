"""`meshctl top`: rows from two synthetic scrapes, their formatting, and the sampling loop on a fake clock."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mesh import cli
from mesh.local import errors, top

INGRESS = top.INGRESS
BOUNDS = ("0.5", "1", "5", "10", "25", "50", "100", "250", "+Inf")


def series(reporter: str, workload: str, code: int, durations_ms: list[float], source: str = "gw-v1") -> str:
    """One label set of istio_requests_total and its duration histogram, as a sidecar renders it."""
    labels = (f'reporter="{reporter}",source_workload="{source}",destination_workload="{workload}",'
              f'response_code="{code}",response_flags="-"')
    lines = [f"istio_requests_total{{{labels}}} {len(durations_ms)}"]
    for bound in BOUNDS:
        count = sum(1 for d in durations_ms if bound == "+Inf" or d <= float(bound))
        lines.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="{bound}"}} {count}')
    return "\n".join(["# TYPE istio_requests_total counter", *lines]) + "\n"


def test_rates_error_share_and_p99_come_from_growth_between_the_scrapes() -> None:
    before = {"books-v1": series("destination", "books-v1", 200, [3.0] * 50), INGRESS: ""}
    after = {
        # 100 new requests in 2 s: 90 fast 200s, 10 slow 503s
        "books-v1": series("destination", "books-v1", 200, [3.0] * 140)
        + series("destination", "books-v1", 503, [80.0] * 10),
        # the ingress counts what its clients saw (reporter=source); a destination series there is ignored
        INGRESS: series("source", "gw-v1", 200, [20.0] * 40, source=INGRESS)
        + series("destination", "x", 500, [1.0] * 99, source=INGRESS),
    }
    ingress, books = top.rows(before, after, elapsed=2.0)
    assert (ingress.workload, ingress.reporter, ingress.requests, ingress.rps) == (INGRESS, "source", 40, 20.0)
    assert ingress.error_rate == 0.0
    assert ingress.p99_ms == pytest.approx(10 + 15 * 0.99)  # all in (10, 25]: linear within the bucket
    assert (books.workload, books.reporter, books.requests, books.rps) == ("books-v1", "destination", 100, 50.0)
    assert books.error_rate == pytest.approx(0.1)
    assert books.p99_ms == pytest.approx(50 + 50 * 0.9)  # rank 99 of 100: the 9th of the 10 in (50, 100]


def test_idle_and_unreachable_workloads() -> None:
    text = series("destination", "ratings-v1", 200, [1.0] * 7)
    rows = top.rows({"ratings-v1": text, "ratings-v2": None}, {"ratings-v1": text, "ratings-v2": "x 1"}, 1.0)
    idle, down = rows
    assert (idle.requests, idle.rps, idle.error_rate, idle.p99_ms, idle.scraped) == (0, 0.0, None, None, True)
    assert (down.workload, down.scraped) == ("ratings-v2", False)
    assert top.cells(idle) == {"workload": "ratings-v1", "reporter": "destination", "rps": "0.0", "5xx": "-",
                               "p99": "-", "requests": "0"}
    assert top.cells(down)["requests"] == "unreachable"


def test_a_restarted_proxy_counts_nothing_rather_than_negative() -> None:
    before = {"gw-v1": series("destination", "gw-v1", 200, [1.0] * 500)}
    after = {"gw-v1": series("destination", "gw-v1", 200, [1.0] * 3)}  # counters reset
    (row,) = top.rows(before, after, 1.0)
    assert row.rps == 0.0 and row.error_rate is None


def test_rows_need_a_positive_interval() -> None:
    with pytest.raises(ValueError):
        top.rows({}, {}, 0.0)


def test_formatting_and_json() -> None:
    row = top.Row("books-v1", "destination", 123.0, 61.5, 0.0125, 12.3456)
    assert top.cells(row) == {"workload": "books-v1", "reporter": "destination", "rps": "61.5", "5xx": "1.2%",
                              "p99": "12.3 ms", "requests": "123"}
    doc = top.as_json([row], 2.0004, "dev")
    assert doc == {"stack": "dev", "intervalSeconds": 2.0, "workloads": [
        {"workload": "books-v1", "reporter": "destination", "requests": 123, "rps": 61.5, "errorRate": 0.0125,
         "p99Ms": 12.346, "scraped": True}]}
    json.dumps(doc, allow_nan=False)  # None, never NaN: valid JSON


class FakeEnv:
    """Scrapes that grow by 10 requests per scrape; a fake clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 100.0
        self.scrapes = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def workloads(self) -> list[str]:
        return ["gw-v1", "gone-v1"]

    def stats(self, workload: str) -> str:
        if workload == "gone-v1":
            raise errors.WeirError("connection refused")
        self.scrapes += 1
        reporter = "source" if workload == INGRESS else "destination"
        return series(reporter, workload, 200, [2.0] * (10 * self.scrapes))


def test_watch_samples_every_interval_on_the_injected_clock() -> None:
    env = FakeEnv()
    samples = top.watch(env, interval=2.0, clock=env.clock, sleep=env.sleep)
    elapsed, rows = next(samples)
    assert elapsed == 2.0 and env.now == 102.0
    assert [r.workload for r in rows] == [INGRESS, "gone-v1", "gw-v1"]
    assert [r.scraped for r in rows] == [True, False, True]
    assert all(r.rps > 0 for r in rows if r.scraped)
    elapsed, _ = next(samples)
    assert elapsed == 2.0 and env.now == 104.0


def test_top_is_registered_and_needs_a_running_stack(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WEIR_HOME", str(tmp_path))
    result = CliRunner().invoke(cli.main, ["top", "--once", "--stack", "dev"])
    assert result.exit_code == 1 and "no Weir environment is running for stack dev" in result.output
    assert "--interval" in CliRunner().invoke(cli.main, ["top", "--help"]).output
