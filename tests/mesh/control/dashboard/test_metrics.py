"""Prometheus text → series, the delta of two scrapes (counter resets) and histogram_quantile."""

from __future__ import annotations

import math

import pytest

from mesh.control.dashboard import metrics
from tests.mesh.control.dashboard.promtext import Row, render


def test_parse_keeps_requests_and_buckets_only() -> None:
    scrape = metrics.parse(render([Row("source", "gw-v1", "books-v1", 7, latency_ms=20)]), at=5.0)
    [(key, series)] = scrape.series.items()
    labels = dict(key)
    assert (labels["source_workload"], labels["destination_workload"], series.count) == ("gw-v1", "books-v1", 7)
    assert "le" not in labels and scrape.at == 5.0
    assert series.buckets[-1] == (math.inf, 7) and (10.0, 0) in series.buckets and (25.0, 7) in series.buckets


def test_parse_unescapes_label_values() -> None:
    text = 'istio_requests_total{reporter="source",destination_service="a\\"b\\\\c"} 2\n'
    [key] = metrics.parse(text, 0).series
    assert dict(key)["destination_service"] == 'a"b\\c'


def test_delta_subtracts_and_treats_new_or_reset_series_as_whole() -> None:
    old = metrics.parse(render([Row("source", "gw-v1", "books-v1", 10), Row("source", "gw-v1", "books-v2", 50)]), 0)
    new = metrics.parse(render([Row("source", "gw-v1", "books-v1", 14), Row("source", "gw-v1", "books-v2", 3),
                                Row("source", "gw-v1", "ratings-v1", 2)]), 1)
    counts = {dict(k)["destination_workload"]: s.count for k, s in metrics.delta(old, new).items()}
    assert counts == {"books-v1": 4, "books-v2": 3, "ratings-v1": 2}


@pytest.mark.parametrize(("q", "expected"), [(0.5, 7.5), (0.99, 9.95), (1.0, 10.0)])
def test_quantile_interpolates_inside_the_bucket(q: float, expected: float) -> None:
    buckets = ((1.0, 0.0), (5.0, 0.0), (10.0, 100.0), (math.inf, 100.0))
    assert metrics.quantile(q, buckets) == pytest.approx(expected)


def test_quantile_edges() -> None:
    assert metrics.quantile(0.99, ()) is None
    assert metrics.quantile(0.99, ((1.0, 0.0), (math.inf, 0.0))) is None
    assert metrics.quantile(0.99, ((1.0, 1.0), (math.inf, 100.0))) == 1.0  # rank in +Inf: highest finite bound
