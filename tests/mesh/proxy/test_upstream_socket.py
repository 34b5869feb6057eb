"""Socket options on upstream connections: DestinationRule tcpKeepalive, read back from a real TCP socket."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from mesh.proxy import pool, upstream
from mesh.view import model


class Transport:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str, default=None):
        return self.sock if name == "socket" else default


@pytest.fixture
def tcp_socket():
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        yield client
        client.close()
        accepted.close()


def options(sock: socket.socket) -> tuple[int, int, int, int]:
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT))


def test_a_connection_of_a_cluster_with_tcp_keepalive_sets_it(tcp_socket):
    settings = model.ConnectionPool(tcp_keepalive=True, keepalive_time_s=600, keepalive_interval_s=30,
                                    keepalive_probes=4)
    cluster = SimpleNamespace(spec=model.Cluster("c", pool=settings))
    upstream.UpstreamConnection(pool.EndpointPool(("127.0.0.1", 1)), cluster).connection_made(Transport(tcp_socket))
    assert options(tcp_socket) == (1, 600, 30, 4)


def test_unset_values_keep_the_os_defaults_and_no_setting_leaves_keepalive_off(tcp_socket):
    defaults = options(tcp_socket)[1:]
    plain = SimpleNamespace(spec=model.Cluster("c"))
    upstream.UpstreamConnection(pool.EndpointPool(("127.0.0.1", 1)), plain).connection_made(Transport(tcp_socket))
    assert options(tcp_socket)[0] == 0
    upstream.set_tcp_keepalive(Transport(tcp_socket), model.ConnectionPool(tcp_keepalive=True, keepalive_probes=2))
    assert options(tcp_socket) == (1, defaults[0], defaults[1], 2)
