"""Ports for local listeners: free, and never from the kernel's ephemeral range."""

from __future__ import annotations

import socket

from mpc.local import LOWEST_PORT, _ephemeral_range, free_port


def test_free_ports_lie_outside_the_ephemeral_range_and_bind() -> None:
    low, high = _ephemeral_range()
    for _ in range(20):
        port = free_port()
        assert LOWEST_PORT <= port < 65536 and not low <= port <= high
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_not_handed_out() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", free_port()))
    taken.listen()
    try:
        used = taken.getsockname()[1]
        assert all(free_port() != used for _ in range(200))
    finally:
        taken.close()
