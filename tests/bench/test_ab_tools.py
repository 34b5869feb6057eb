"""The A/B tools of the bench: the interleaved pairs' summary and flags (no load run), and the in-process
hot-path measure run for a few requests per mode."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from bench import hotpath, interleaved


def test_the_summary_takes_medians_and_compares_with_the_first_variant():
    samples = {"off": interleaved.Samples([5000, 7000, 6000], [80, 60, 70]),
               "on": interleaved.Samples([4500, 3000, 4000, 9000], [100, 120, 90, 95])}
    off, on = interleaved.summarize(samples)
    assert (off["variant"], off["rps_median"], off["ratio"], off["cpu_us_per_request_median"]) == ("off", 6000, 1.0, 70)
    assert (on["rps_median"], on["ratio"], on["cpu_us_per_request_median"], on["cycles"]) == (4250, 4250 / 6000, 97.5, 4)
    assert (on["rps_min"], on["rps_max"]) == (3000, 9000)


def test_a_variant_is_a_name_and_shell_words():
    assert interleaved.parse_variant("off=--telemetry off") == ("off", ("--telemetry", "off"))
    assert interleaved.parse_variant("on=") == ("on", ())
    assert interleaved.parse_variant("q=--access-log '/tmp/a b.log'") == ("q", ("--access-log", "/tmp/a b.log"))
    for bad in ("off", "=--telemetry off"):
        with pytest.raises(argparse.ArgumentTypeError):
            interleaved.parse_variant(bad)


def test_the_hot_path_measure_serves_every_request_in_every_mode():
    figures = asyncio.run(hotpath.measure(cycles=2, requests=20))
    assert set(figures) == set(hotpath.MODES)
    assert all(f["us_per_request"] > 0 for f in figures.values())
    assert figures["telemetry-off"]["flush_us_per_request"] < figures["telemetry-on"]["us_per_request"]
