"""tests.testinfra.listening on this machine: the /proc/net reader that the pod tests rely on (the Weir image
has neither ss nor netstat) is checked here, where there is no cluster, against a socket of our own."""

from __future__ import annotations

import socket

import pytest
import testinfra

from tests.testinfra import listening


@pytest.fixture(scope="module")
def local_host():
    return testinfra.get_host("local://")


@pytest.mark.parametrize("family, address", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_both_readers_find_a_listening_socket_at_its_address(local_host, family, address):
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with socket.socket(family) as sock:
        try:
            sock.bind((address, 0))
        except OSError as exc:
            pytest.skip(f"cannot bind {address}: {exc}")
        sock.listen()
        port = sock.getsockname()[1]
        assert listening.from_proc(local_host).get(port) == {address}
        assert listening.listening(local_host).get(port) == {address}


def test_a_closed_port_is_not_listening(local_host):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening
        port = sock.getsockname()[1]
        assert port not in listening.from_proc(local_host)
        assert port not in listening.listening(local_host)
