"""xDS bookkeeping: when to answer, ACK, NACK, status rows, disconnection."""

from __future__ import annotations

from mesh.control import discovery, node
from tests.mesh.control.fakes import FakeBuilder, FakeClock, FakeSnapshot

A = node.make_node("a.ns", "sidecar", "ns", "a")


def setup():
    clock = FakeClock()
    disco = discovery.Discovery(FakeSnapshot(0, ("9080",)), FakeBuilder(), clock)
    return clock, disco


def new_snapshot(disco, revision, routes):
    disco.snapshot = FakeSnapshot(revision, routes)
    return disco.refresh(A.id)


def test_first_request_is_answered_then_acked():
    clock, disco = setup()
    state = disco.on_request(A, "", "", None)
    assert disco.should_send(state, "")
    sent = disco.mark_sent(state)
    assert sent["version_info"] == state.version and sent["view"]["proxy"] == "a.ns"
    assert disco.rows()[0]["status"] == discovery.STALE
    state = disco.on_request(A, sent["version_info"], sent["nonce"], None)
    assert not disco.should_send(state, sent["version_info"])
    row = disco.rows()[0]
    assert row["status"] == discovery.SYNCED and row["sent"] == row["acked"] == state.version


def test_nack_is_recorded_and_the_refused_version_is_not_resent():
    clock, disco = setup()
    state = disco.on_request(A, "", "", None)
    first = disco.mark_sent(state)
    disco.on_request(A, first["version_info"], first["nonce"], None)
    assert new_snapshot(disco, 1, ("9080", "8080"))
    second = disco.mark_sent(state)
    state = disco.on_request(A, first["version_info"], second["nonce"], {"message": "bad regex"})
    assert not disco.should_send(state, first["version_info"])
    row = disco.rows()[0]
    assert row["status"] == discovery.NACKED and row["acked"] == first["version_info"]
    assert row["lastNack"]["version"] == second["version_info"] and row["lastNack"]["error"] == "bad regex"
    assert new_snapshot(disco, 2, ("9080", "7070"))  # a new view is sent again
    assert disco.should_send(state, first["version_info"])
    third = disco.mark_sent(state)
    disco.on_request(A, third["version_info"], third["nonce"], None)
    assert disco.rows()[0]["status"] == discovery.SYNCED
    assert disco.rows()[0]["lastNack"] is not None  # history stays visible


def test_restarted_control_plane_does_not_resend_an_equal_view():
    _, disco = setup()
    state = disco.on_request(A, "", "", None)
    version = state.version
    _, fresh = setup()
    state = fresh.on_request(A, version, "stale-nonce", None)
    assert not fresh.should_send(state, version) and fresh.rows()[0]["status"] == discovery.SYNCED


def test_disconnected_after_silence_unless_polling():
    clock, disco = setup()
    state = disco.on_request(A, "", "", None)
    clock.advance(discovery.DISCONNECTED_AFTER + 1)
    assert disco.rows()[0]["status"] == discovery.DISCONNECTED and disco.connected() == []
    state.polling = 1
    assert disco.rows()[0]["connected"] is True
    state.polling = 0
    clock.advance(discovery.FORGET_AFTER)
    disco.forget_stale()
    assert disco.rows() == []


def test_node_change_rebuilds():
    _, disco = setup()
    disco.on_request(A, "", "", None)
    relabelled = node.make_node("a.ns", "sidecar", "ns", "a", {"version": "v2"})
    disco.on_request(relabelled, "", "", None)
    assert disco.build.calls == [(0, "a.ns"), (0, "a.ns")]


def test_parse_node_as_the_proxy_sends_it():
    n = node.parse_node({"id": "ingress", "role": "gateway", "namespace": "weir-system", "workload": "ingress",
                         "labels": {"istio": "ingressgateway"}, "serviceAccount": "x",
                         "ports": {"app": None, "inbound": None, "outbound": None, "admin": 15000}})
    assert n.role == "gateway" and dict(n.ports) == {"admin": 15000} and n.app_port is None
    assert n.address == "" and "address" not in n.to_dict()
    pod = node.parse_node({"id": "books-v1-5f7c9.bookinfo", "address": "10.20.1.7", "ports": {"health": 15021}})
    assert pod.address == "10.20.1.7" and pod.to_dict()["address"] == "10.20.1.7"
    for bad in (None, {}, {"id": "x", "role": "router"}, {"id": "x", "ports": {"app": "eighty"}},
                {"id": "x", "address": "$(INSTANCE_IP)"}):
        try:
            node.parse_node(bad)
        except node.NodeError:
            continue
        raise AssertionError(f"accepted {bad}")


def test_reverting_to_the_acked_view_after_a_nack_is_synced():
    clock, disco = setup()
    state = disco.on_request(A, "", "", None)
    first = disco.mark_sent(state)
    disco.on_request(A, first["version_info"], first["nonce"], None)
    assert new_snapshot(disco, 1, ("9080", "8080"))
    second = disco.mark_sent(state)
    state = disco.on_request(A, first["version_info"], second["nonce"], {"message": "cannot bind"})
    assert disco.rows()[0]["status"] == discovery.NACKED
    assert new_snapshot(disco, 2, ("9080",))  # the offending config is deleted again
    assert not disco.should_send(state, first["version_info"])
    assert disco.rows()[0]["status"] == discovery.SYNCED
