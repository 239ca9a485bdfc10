"""The network policy at the socket level: what a guarded thread may connect to, and that nothing else changes."""

from __future__ import annotations

import socket
import threading

import pytest

from v60k.core.netguard import BlockedAddress, Policy, check_host, guarded


@pytest.fixture
def listener():
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


def test_a_guarded_thread_cannot_connect_to_a_refused_address(listener):
    with guarded(Policy(allow_private=False)) as policy:
        with pytest.raises(BlockedAddress, match="loopback or private"):
            socket.create_connection(("localhost", listener), timeout=2)
        with pytest.raises(BlockedAddress, match="link-local"):
            socket.getaddrinfo("169.254.169.254", 80)
    assert len(policy.refusals) == 2
    socket.create_connection(("127.0.0.1", listener), timeout=2).close()  # outside the block: unchanged

    with guarded(Policy(allow_private=True)):
        socket.create_connection(("127.0.0.1", listener), timeout=2).close()
        with pytest.raises(BlockedAddress):
            socket.getaddrinfo("fe80::1", 80)


def test_other_threads_are_not_affected(listener):
    results: list[str] = []

    def connect() -> None:
        socket.create_connection(("127.0.0.1", listener), timeout=2).close()
        results.append("connected")

    with guarded(Policy(allow_private=False)):
        worker = threading.Thread(target=connect)
        worker.start()
        worker.join(10)
    assert results == ["connected"]


def test_check_host_judges_literals_without_a_lookup():
    with pytest.raises(BlockedAddress):
        check_host("169.254.169.254", 80, Policy(allow_private=True))
    with pytest.raises(BlockedAddress):
        check_host("::ffff:10.0.0.1", None, Policy(allow_private=False))
    check_host("10.0.0.1", 80, Policy(allow_private=True))
