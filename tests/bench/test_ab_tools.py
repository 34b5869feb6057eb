"""The A/B tools of the bench: the interleaved pairs' summary and flags (no load run), and the in-process
hot-path measure run for a few requests per mode."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from bench import hotpath, instructions, interleaved, sidecar
from mesh.proxy import tracing


def test_the_summary_takes_medians_and_compares_with_the_first_variant():
    samples = {"off": interleaved.Samples([5000, 7000, 6000], [80, 60, 70], [30, 20, 40]),
               "on": interleaved.Samples([4500, 3000, 4000, 9000], [100, 120, 90, 95], [50, 55, 45, 40])}
    off, on = interleaved.summarize(samples)
    assert (off["variant"], off["rps_median"], off["ratio"], off["cpu_us_per_request_median"]) == ("off", 6000, 1.0, 70)
    assert (off["system_us_per_request_median"], on["system_us_per_request_median"]) == (30, 47.5)
    assert (on["rps_median"], on["ratio"], on["cpu_us_per_request_median"], on["cycles"]) == (4250, 4250 / 6000, 97.5, 4)
    assert (on["rps_min"], on["rps_max"]) == (3000, 9000)
    # Paired: cycle by cycle against the base (4500/5000, 3000/7000, 4000/6000; the base has no fourth cycle).
    assert off["paired_ratio"] == 1.0 and on["paired_ratio"] == 4000 / 6000


def test_a_variant_is_a_name_and_shell_words_and_may_name_another_checkout(tmp_path):
    assert interleaved.parse_variant("off=--telemetry off") == ("off", ("--telemetry", "off"), None)
    assert interleaved.parse_variant("on=") == ("on", (), None)
    assert interleaved.parse_variant("q=--access-log '/tmp/a b.log'") == ("q", ("--access-log", "/tmp/a b.log"), None)
    (tmp_path / "mesh" / "proxy").mkdir(parents=True)
    (tmp_path / "mesh" / "proxy" / "__main__.py").write_text("")
    assert interleaved.parse_variant(f"base@{tmp_path}=--telemetry off") == ("base", ("--telemetry", "off"), tmp_path)
    for bad in ("off", "=--telemetry off", "base@=", f"base@{tmp_path / 'nowhere'}="):
        with pytest.raises(argparse.ArgumentTypeError):
            interleaved.parse_variant(bad)


def test_variants_default_to_the_telemetry_ones_and_need_distinct_names():
    assert [v.name for v in interleaved.variants_of(None)] == ["telemetry-off", "telemetry-on", "tracing-only"]
    given = [interleaved.Variant("a"), interleaved.Variant("b", ("--telemetry", "off"))]
    assert interleaved.variants_of(given) == tuple(given)
    with pytest.raises(SystemExit, match="own name"):
        interleaved.variants_of([interleaved.Variant("a"), interleaved.Variant("a", ("--x",))])


def test_a_sidecar_runs_from_the_checkout_it_is_given(tmp_path):
    started = {}

    class Procs:
        def start(self, name, argv, cpus=None, cwd=None):
            started[name] = cwd
            raise RuntimeError("not started in this test")

    for tree in (None, tmp_path):
        with pytest.raises(RuntimeError):
            sidecar.start(Procs(), f"s-{tree is None}", sidecar.inbound_view(1), tmp_path, [], tree=tree)
    assert started == {"s-True": str(sidecar.REPO_ROOT), "s-False": str(tmp_path)}


def test_the_hot_path_measure_serves_every_request_in_every_mode():
    figures = asyncio.run(hotpath.measure(cycles=2, requests=20))
    assert set(figures) == set(hotpath.MODES)
    assert all(f["us_per_request"] > 0 for f in figures.values())
    assert figures["telemetry-off"]["format_us_per_request"] < figures["telemetry-on"]["us_per_request"]


# -- bench.instructions: the callgrind dump's total and the requests it counts (no valgrind run here) ----------

DUMP = b"""version: 1
creator: callgrind-3.19.0
cmd:  python -m mesh.proxy --role sidecar
part: 1
events: Ir
fn=(1) main
0 12
summary: 339219452
totals: 339219452
"""


def test_the_dump_total_is_its_summary_line():
    assert instructions.dumped_instructions(DUMP) == 339_219_452
    assert instructions.dumped_instructions(DUMP.replace(b"summary: 339219452\n", b"")) == 339_219_452
    with pytest.raises(ValueError, match="not a callgrind dump"):
        instructions.dumped_instructions(b"events: Ir\nfn=(1) main\n")


def test_requests_carry_a_callers_trace_only_when_asked():
    plain = instructions.Requests(1, traceparent=False).headers()
    assert plain["Host"] == sidecar.HOST_HEADER and "traceparent" not in plain and "x-request-id" not in plain
    joined = instructions.Requests(1, traceparent=True)
    first, second = joined.headers(), joined.headers()
    for head in (first, second):
        assert tracing.extract([(b"traceparent", head["traceparent"].encode())]) is not None
    assert first["traceparent"] != second["traceparent"] and first["x-request-id"] != second["x-request-id"]
