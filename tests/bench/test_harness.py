"""Smoke test of the bench harness pieces that need no load tool: parsing, configs, views, targets, /proc."""

from __future__ import annotations

import json
import math
import os
import socket

import pytest
from rich.console import Console

from bench import nginx, paths, processes, profile, report, run, sidecar, wrk
from mesh.view import model, wire

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:40000/1k
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   650.00us  300.00us   9.00ms   90.00%
    Req/Sec    24.50k     1.20k   26.00k    80.00%
  Latency Distribution
     50%  612.00us
     75%  700.00us
     90%    1.10ms
     99%    2.50ms
  73263 requests in 3.00s, 89.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  24371.77
Transfer/sec:     29.70MB
"""


def test_wrk_report_is_parsed():
    parsed = wrk.parse(WRK_OUTPUT)
    assert parsed == {"rps": 24371.77, "requests": 73263, "p50_ms": pytest.approx(0.612),
                      "p99_ms": pytest.approx(2.5), "socket_errors": 3, "non_2xx": 4}
    with pytest.raises(ValueError):
        wrk.parse("connection refused")
    assert wrk.command("http://x/", 64, 10, "up:9080")[-3:] == ["-H", "Host: up:9080", "http://x/"]


def test_nginx_configs_name_ports_and_keepalive(tmp_path):
    up = nginx.upstream_conf(tmp_path, 40001, tmp_path / "www")
    proxy = nginx.proxy_conf(tmp_path, 40002, 40001)
    assert "listen 127.0.0.1:40001" in up and f"root {tmp_path / 'www'};" in up
    for line in ("server 127.0.0.1:40001;", "keepalive 64;", "proxy_http_version 1.1;",
                 'proxy_set_header Connection "";', "access_log off;", "worker_processes 1;"):
        assert line in proxy
    assert nginx.write_payload(tmp_path / "www").stat().st_size == nginx.PAYLOAD_BYTES


def test_sidecar_views_are_executable_and_survive_the_wire():
    for view in (sidecar.inbound_view(40001), sidecar.outbound_view(40002)):
        model.check_references(view)
        assert wire.from_dict(json.loads(json.dumps(wire.to_dict(view)))) == view
    table = sidecar.outbound_view(40002).route_tables[0]
    assert table.name == str(sidecar.SERVICE_PORT) and table.virtual_hosts[0].domains == ("up",)
    argv = sidecar.command("x", sidecar.REPO_ROOT / "v.json", 1, 2, 3)
    assert argv[1:3] == ["-m", "mesh.proxy"] and "--bootstrap" in argv


def test_resilient_outbound_view_carries_issue_3_settings_over_the_wire():
    view = sidecar.outbound_view(40002, resilience=True)
    assert wire.from_dict(json.loads(json.dumps(wire.to_dict(view)))) == view
    (route,) = view.route_tables[0].virtual_hosts[0].routes
    (cluster,) = view.clusters
    assert route.timeout_s == 5.0 and route.retries.attempts == 3 and route.retries.per_try_timeout_s == 2.0
    assert route.retries.retry_on == ("5xx", "connect-failure", "reset")
    assert cluster.pool.max_connections == cluster.pool.max_requests == 1024 and cluster.pool.max_retries == 3
    assert cluster.outlier == model.OutlierDetection(5, interval_s=10.0, base_ejection_time_s=30.0,
                                                     max_ejection_percent=10.0)
    plain = sidecar.outbound_view(40002)  # the same view otherwise
    assert plain.clusters[0].outlier is None
    assert plain.route_tables[0].virtual_hosts[0].routes[0].timeout_s is None
    assert view.listeners == plain.listeners and view.endpoints == plain.endpoints


def test_resilience_targets_compare_the_two_pairs():
    results = {"pair": {"wrk": {"16": {"rps": 1000.0}, "64": {"rps": 1000.0}}, "openloop": {"p50_ms": 1.0}},
               "pair-resilience": {"wrk": {"16": {"rps": 950.0}, "64": {"rps": 850.0}},
                                   "openloop": {"p50_ms": 1.05}}}
    rows = {r["target"]: r for r in report.evaluate(results, (16, 64)) if "resilience" in r["target"]}
    assert [r["pass"] for r in rows.values()] == [True, False, True]
    assert rows["pair with resilience ÷ pair without, throughput, 64 conns"]["value"] == pytest.approx(0.85)
    assert "pair-resilience" in report.LABELS


def test_telemetry_target_is_one_sidecars_and_the_pair_is_reported_beside_it_round_by_round():
    def rounds(*rps):
        return {"wrk": {"16": {"rps": sorted(rps)[len(rps) // 2], "rps_rounds": list(rps)}}}

    results = {"sidecar-no-telemetry": rounds(1000.0, 500.0, 1000.0), "sidecar": rounds(950.0, 480.0, 900.0),
               "pair-no-telemetry": rounds(400.0, 200.0, 400.0), "pair": rounds(340.0, 190.0, 352.0)}
    rows = {r["target"]: r for r in report.evaluate(results, (16,)) if "telemetry ÷" in r["target"]}
    assert list(rows) == ["one sidecar with telemetry ÷ telemetry off, throughput, 16 conns",
                          "pair with telemetry ÷ telemetry off, throughput, 16 conns (both sidecars on one CPU)"]
    one, pair = rows.values()
    assert one["value"] == pytest.approx(0.95) and one["pass"] is True  # rounds 0.95, 0.96, 0.90: their median
    assert pair["value"] == pytest.approx(0.88) and pair["pass"] is None  # 0.85, 0.95, 0.88: reported only
    slow = {**results, "sidecar": rounds(850.0, 430.0, 880.0)}  # 0.85, 0.86, 0.88
    failing = [r for r in report.evaluate(slow, (16,)) if r["target"].startswith("one sidecar with telemetry")]
    assert failing[0]["value"] == pytest.approx(0.86) and failing[0]["pass"] is False


def test_a_reported_figure_prints_as_info_not_as_a_pass_or_a_fail():
    console = Console(record=True, width=200)
    console.print(report.targets_table([{"target": "reported only", "value": 0.88, "limit": "reported", "pass": None},
                                        {"target": "a target", "value": 0.95, "limit": "≥ 0.9", "pass": True}]))
    lines = {line.split("│")[1].strip(): line for line in console.export_text().splitlines() if line.count("│") > 2}
    assert "info" in lines["reported only"] and "FAIL" not in lines["reported only"]
    assert "PASS" in lines["a target"]


def test_targets_are_evaluated_against_the_figures():
    """Issue 2's targets on the sidecars with metrics and no access log or tracing (the `-no-telemetry`
    paths), and the same targets again on the sidecars as deployed."""
    results = {
        "direct": {"openloop": {"p50_ms": 0.2, "p99_ms": 1.0}},
        "sidecar-no-telemetry": {"wrk": {"64": {"rps": 7000.0}}, "cpu_s_per_1k": {"sidecar": 0.1},
                                 "peak_rss_mib": {"sidecar": 30.0}},
        "pair-no-telemetry": {"openloop": {"p50_ms": 0.6, "p99_ms": 1.5},
                              "cpu_s_per_1k": {"client": 0.13, "server": 0.1},
                              "peak_rss_mib": {"client": 31.0, "server": 29.0}},
        "sidecar": {"wrk": {"64": {"rps": 5000.0}}, "cpu_s_per_1k": {"sidecar": 0.11},
                    "peak_rss_mib": {"sidecar": 41.0}},
        "pair": {"openloop": {"p50_ms": 0.4, "p99_ms": 2.0}, "cpu_s_per_1k": {"client": 0.11, "server": 0.1},
                 "peak_rss_mib": {"client": 31.0, "server": 29.0}},
        "nginx": {"wrk": {"64": {"rps": 10000.0}}},
    }
    rows = {row["target"]: row for row in report.evaluate(results, (64,))}
    metrics = {name.replace(" (metrics, no access log or tracing)", ""): row for name, row in rows.items()
               if name.endswith("(metrics, no access log or tracing)")}
    deployed = {name.replace(" (as deployed: + access log, tracing)", ""): row for name, row in rows.items()
                if name.endswith("(as deployed: + access log, tracing)")}
    assert metrics.keys() == deployed.keys() and len(metrics) == 5
    assert metrics["one sidecar throughput ÷ nginx-as-proxy, 64 conns"]["value"] == pytest.approx(0.7)
    assert metrics["one sidecar throughput ÷ nginx-as-proxy, 64 conns"]["pass"]
    assert deployed["one sidecar throughput ÷ nginx-as-proxy, 64 conns"]["value"] == pytest.approx(0.5)
    assert not deployed["one sidecar throughput ÷ nginx-as-proxy, 64 conns"]["pass"]
    assert metrics["sidecar pair added latency p50 (ms)"]["value"] == pytest.approx(0.4)
    assert not metrics["sidecar pair added latency p50 (ms)"]["pass"]
    assert metrics["sidecar pair added latency p99 (ms)"]["pass"]
    assert deployed["sidecar pair added latency p50 (ms)"]["pass"]
    assert not deployed["sidecar pair added latency p99 (ms)"]["pass"]
    assert metrics["CPU-s per 1000 requests per sidecar, worst"]["value"] == 0.13
    assert deployed["CPU-s per 1000 requests per sidecar, worst"]["value"] == 0.11
    assert metrics["peak RSS per sidecar, MiB, worst"]["pass"]
    assert not deployed["peak RSS per sidecar, MiB, worst"]["pass"]
    missing = report.evaluate({}, (16,))
    assert all(math.isnan(r["value"]) and not r["pass"] for r in missing)


def test_report_renders_and_json_has_no_nan(tmp_path):
    results = {"direct": {"wrk": {"16": {"rps": 1.0}}, "openloop": {"p50_ms": math.nan}}}
    targets = report.evaluate(results, (16,))
    info = report.machine_info("none", {"wrk": "test"})
    report.print_report(results, targets, info, (16,), 1000.0)
    out = tmp_path / "latest.json"
    report.write_json(out, results, targets, info, {})
    doc = json.loads(out.read_text())  # strict JSON: NaN became null
    assert doc["results"]["direct"]["openloop"]["p50_ms"] is None
    assert doc["machine"]["nproc"] == os.cpu_count()


def test_proc_readers_and_pinning():
    sum(range(200_000))  # some user time at least
    user, system = processes.cpu_times(os.getpid())
    assert user > 0 and system >= 0 and processes.cpu_seconds(os.getpid()) >= user + system
    assert 1 < processes.peak_rss_mib(os.getpid()) < 4096
    assert processes.choose_pinning(1).load is None
    assert processes.Pinning("0", "1").prefix(None) == []


def test_free_ports_are_below_the_ephemeral_range_distinct_and_unbound(monkeypatch, tmp_path):
    (tmp_path / "range").write_text("32768\t60999\n")
    monkeypatch.setattr(processes, "EPHEMERAL_RANGE", tmp_path / "range")
    monkeypatch.setattr(processes, "_handed", set())
    monkeypatch.setattr(processes, "PORTS_FROM", 30000)
    first = processes.free_port()
    with socket.socket() as squatter:  # a port someone listens on is skipped
        squatter.bind(("127.0.0.1", first + 1))
        squatter.listen()
        ports = [first] + [processes.free_port() for _ in range(5)]
    assert len(set(ports)) == len(ports), ports  # never handed out twice, though none was bound meanwhile
    assert all(30000 <= port < 32768 for port in ports) and first + 1 not in ports
    monkeypatch.setattr(processes, "PORTS_FROM", 32767)  # one port left below the range, already handed
    monkeypatch.setattr(processes, "_handed", {32767})
    with pytest.raises(RuntimeError, match="no free port"):
        processes.free_port()


def test_profile_self_time_aggregates_leaf_frames():
    raw = ("run (asyncio/events.py:80);data_received (/r/mesh/proxy/downstream.py:90) 30\n"
           "run (asyncio/events.py:80);data_received (/r/mesh/proxy/downstream.py:95) 10\n"
           "run (asyncio/events.py:80) 60\n")
    top = profile.self_time(raw)
    assert top[0] == {"function": "run (events.py)", "samples": 60, "share": 0.6}
    assert top[1]["function"] == "data_received (mesh/proxy/downstream.py)" and top[1]["samples"] == 40


def test_pair_mtls_views_identities_and_flags(tmp_path):
    from mesh.proxy import certagent, tls
    from mesh.view import security

    ids = sidecar.write_identities(tmp_path, "up", "bench-client")
    server = sidecar.inbound_view(40001, mode=security.STRICT)
    client = sidecar.outbound_view(40002, peer_identity=ids["up"].spiffe_id)
    for view in (server, client):
        assert wire.from_dict(json.loads(json.dumps(wire.to_dict(view)))) == view
    assert server.security.mtls.mode == security.STRICT
    (endpoint,) = client.endpoints[0].endpoints
    assert endpoint.mtls and endpoint.identity == "spiffe://cluster.local/ns/default/sa/up"
    assert not sidecar.outbound_view(40002).endpoints[0].endpoints[0].mtls  # the plaintext pair is unchanged
    argv = sidecar.command("x", tmp_path / "v.json", 1, 2, 3, ids["up"])
    assert argv[argv.index("--tls-cert") + 1] == str(ids["up"].cert)
    assert oct(ids["up"].key.stat().st_mode & 0o777) == "0o600"
    material = tls.MeshTls(tmp_path / "installed")  # what the proxy does with the flags
    certagent.install_static(material, str(ids["up"].cert), str(ids["up"].key), str(ids["up"].roots))
    assert material.ready and material.spiffe_id == ids["up"].spiffe_id


def test_tls_summary_and_mtls_targets():
    client = ("weir_upstream_cx_tls_handshakes_total 64\n"
              'weir_upstream_cx_tls_failures_total{reason="identity"} 0\n')
    server = ('istio_requests_total{reporter="destination",connection_security_policy="mutual_tls",'
              'source_principal="spiffe://cluster.local/ns/default/sa/bench-client"} 64000\n'
              "weir_downstream_cx_tls_handshakes_total 64\n")
    summary = report.tls_summary(client, server)
    assert summary["client_handshakes"] == summary["server_handshakes"] == 64
    assert summary["mtls_requests"] == 64000 and summary["plaintext_requests"] == 0
    assert summary["requests_per_handshake"] == 1000
    results = {"pair": {"wrk": {"16": {"rps": 1000.0}}, "openloop": {"p50_ms": 1.0}},
               "pair-mtls": {"wrk": {"16": {"rps": 650.0}}, "openloop": {"p50_ms": 1.2}, "tls": summary}}
    rows = {r["target"]: r for r in report.evaluate(results, (16,)) if "mTLS" in r["target"]}
    assert [r["pass"] for r in rows.values()] == [False, True, True]
    assert "pair-mtls" in report.LABELS
    report.print_report(results, report.evaluate(results, (16,)), report.machine_info("none", {}), (16,), 1000.0)


def test_saturation_runs_interleave_the_paths_and_keep_the_median_round(monkeypatch, tmp_path):
    """Round after round, every path in turn at each connection count; a path's figures are its median
    round's, with every round's requests/s and the totals over all rounds."""
    from bench import run

    order = []
    speeds = iter([900.0, 100.0, 300.0, 30.0, 500.0, 50.0, 700.0, 70.0, 100.0, 10.0, 800.0, 80.0])

    def fake_wrk(url, connections, seconds, *, host_header=None, pin=None):
        order.append((url.split(":")[2].split("/")[0], connections, seconds))
        rps = next(speeds)
        return {"rps": rps, "requests": int(rps * seconds), "p50_ms": 1000 / rps, "p99_ms": 2000 / rps,
                "socket_errors": 1, "non_2xx": 0, "connections": connections}

    def fake_fill(host, port, path, *, host_header=None, connections):
        order.append((str(port), connections, "fill"))
        return connections * 4

    monkeypatch.setattr(run.wrk, "run", fake_wrk)
    monkeypatch.setattr(run.warm, "fill_pool", fake_fill)
    monkeypatch.setattr(run.processes, "wait_quiet", lambda: 0.0)
    targets = {"fast": paths.Target(1001), "slow": paths.Target(1002)}
    results = {name: {"wrk": {}, "busy_before": {}, "tls_phases": {}} for name in targets}
    ctx = paths.Context(tmp_path, processes.choose_pinning(1), 0, duration=6.0, warmup=0.0, rounds=3)
    monkeypatch.setattr(run, "CONNECTIONS", (16, 64))
    run.measure_throughput(targets, results, ctx)

    # Each measured run right after its pool was refilled, by FILL_HEADROOM times its connections.
    assert run.FILL_HEADROOM == 2
    assert order[:8] == [("1001", 32, "fill"), ("1001", 16, 2), ("1002", 32, "fill"), ("1002", 16, 2),
                         ("1001", 128, "fill"), ("1001", 64, 2), ("1002", 128, "fill"), ("1002", 64, 2)]
    assert len(order) == 24
    fast16 = results["fast"]["wrk"]["16"]
    assert fast16["rps_rounds"] == [900.0, 500.0, 100.0]
    assert (fast16["rps"], fast16["p50_ms"]) == (500.0, 2.0)
    assert (fast16["requests"], fast16["socket_errors"]) == (3000, 3)
    assert results["slow"]["wrk"]["64"]["rps"] == 70.0


def test_fill_pool_reads_every_response_to_its_end_over_overlapping_connections():
    """Against a real server: the clients' connections are all open at once, each request is answered 200 and
    read whole before the next, and every connection is closed between requests, never in the middle of one."""
    import socketserver
    import threading

    from bench import warm

    lock = threading.Lock()
    state = {"open": 0, "most_open": 0, "served": 0, "cut": 0}

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with lock:
                state["open"] += 1
                state["most_open"] = max(state["most_open"], state["open"])
            pending = b""
            while True:
                data = self.request.recv(65536)
                if not data:
                    break
                pending += data
                while b"\r\n\r\n" in pending:
                    _, pending = pending.split(b"\r\n\r\n", 1)
                    threading.Event().wait(0.01)  # answers overlap: the clients are all connected
                    self.request.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n" + b"x" * 1024)
                    with lock:
                        state["served"] += 1
            with lock:
                state["open"] -= 1
                state["cut"] += bool(pending)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        answered = warm.fill_pool("127.0.0.1", server.server_address[1], "/1k", connections=8, requests_each=3)
    finally:
        server.shutdown()
        server.server_close()
    assert answered == 24 and state["served"] == 24 and state["cut"] == 0
    assert state["most_open"] == 8  # all at once: a proxy in between would have opened as many upstream


def test_throughput_ratios_are_paired_by_round_when_every_round_is_there():
    """A round where the VM ran slow for both paths (the third) moves neither's ratio; the ratio of the two
    median rounds (9,000 ÷ 20,000, taken from different rounds) would say 0.45."""
    results = {
        "sidecar-no-telemetry": {"wrk": {"16": {"rps": 9000.0, "rps_rounds": [12000.0, 9000.0, 6000.0]}}},
        "nginx": {"wrk": {"16": {"rps": 20000.0, "rps_rounds": [20000.0, 15000.0, 10000.0]}}},
        "sidecar": {"wrk": {"16": {"rps": 5000.0}}},
    }
    assert report.throughput_ratio(results, "sidecar-no-telemetry", "nginx", 16) == pytest.approx(0.6)
    assert report.throughput_ratio(results, "sidecar", "nginx", 16) == pytest.approx(0.25)  # no rounds: medians
    assert math.isnan(report.throughput_ratio(results, "pair", "nginx", 16))
    rows = {r["target"]: r for r in report.evaluate(results, (16,))}
    assert rows["one sidecar throughput ÷ nginx-as-proxy, 16 conns (metrics, no access log or tracing)"]["pass"]


def test_each_compared_pair_of_paths_runs_side_by_side_in_a_round():
    order = list(paths.SCENARIOS)
    for path, baseline in (("sidecar-no-telemetry", "nginx"), ("pair", "pair-no-telemetry"),
                           ("pair-resilience", "pair")):
        assert abs(order.index(path) - order.index(baseline)) == 1, (path, baseline)


def test_open_loop_rounds_combine_as_the_median_round_with_counts_summed():
    rounds = [{"sent_total": 3000, "requests": 2000, "errors": 0, "p50_ms": p50, "p99_ms": p99, "timer": "timerfd"}
              for p50, p99 in ((0.3, 0.9), (0.2, 5.0), (0.25, 0.8))]
    combined = run.combine_openloop(rounds)
    assert (combined["sent_total"], combined["requests"], combined["errors"]) == (9000, 6000, 0)
    assert (combined["p50_ms"], combined["p99_ms"]) == (0.25, 0.9)  # one slow round does not make the p99
    assert combined["p99_ms_rounds"] == [0.9, 5.0, 0.8] and combined["timer"] == "timerfd"
