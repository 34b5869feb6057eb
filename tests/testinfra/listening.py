"""Listening TCP sockets of a testinfra host, as {port: {address, …}}.

`listening` asks testinfra's socket module, which needs `ss` or `netstat`; the Weir image (python:3.11-slim)
has neither, so in a pod's container `from_proc` reads the kernel's own tables, /proc/net/tcp and tcp6.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict

PROC_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
TCP_LISTEN = "0A"  # the `st` column of a listening socket (include/net/tcp_states.h)


def listening(host) -> dict[int, set[str]]:
    """Port → the addresses a TCP socket listens on it, from testinfra (`ss` or `netstat`)."""
    found: dict[int, set[str]] = defaultdict(set)
    for url in host.socket.get_listening_sockets():
        scheme, _, rest = url.partition("://")
        if scheme == "tcp":
            address, _, port = rest.rpartition(":")
            found[int(port)].add(address)
    return dict(found)


def from_proc(host) -> dict[int, set[str]]:
    """The same from /proc/net/tcp{,6}, on any Linux host without tools: a row's `local_address` is the
    IP in hex (little-endian 32-bit words) and the port in hex; `st` is its state."""
    found: dict[int, set[str]] = defaultdict(set)
    for table in PROC_TABLES:
        if not host.file(table).exists:
            continue  # no IPv6 in this kernel
        for line in host.file(table).content_string.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == TCP_LISTEN:
                address, port = fields[1].split(":")
                found[int(port, 16)].add(_address(address))
    return dict(found)


def _address(hex_address: str) -> str:
    words = [bytes.fromhex(hex_address[i:i + 8])[::-1] for i in range(0, len(hex_address), 8)]
    return str(ipaddress.ip_address(b"".join(words)))
