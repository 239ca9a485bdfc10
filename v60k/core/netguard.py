"""Which network addresses a download may connect to (docs/download.md, "Network policy").

Link-local addresses (169.254.0.0/16 — the cloud metadata service —, fe80::/10), unspecified, multicast and
reserved addresses are refused always; loopback and private ranges (127/8, 10/8, 172.16/12, 192.168/16,
100.64/10, fc00::/7, ::1 ...) only unless ``allow_private_networks`` is set. IPv4 addresses embedded in IPv6
ones (``::ffff:a.b.c.d``, 6to4, NAT64) are judged as the IPv4 address they reach.

``guarded(policy)`` applies the policy to every name resolution made by the current thread while it is active:
``socket.getaddrinfo`` drops the refused addresses, so a connection can only be opened to an allowed one. This
covers the first URL, every redirect and every later request (page, media, subtitles), whatever library opens
the socket, and a DNS answer cannot change between the check and the connection (it is the same answer).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddress(OSError):
    """A host resolved only to addresses the policy refuses."""


def _effective(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one reaches (mapped, 6to4, NAT64), else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def address_refusal(host_address: str, allow_private: bool) -> str | None:
    """Why ``host_address`` (an IP address as text) may not be reached, or None when it may."""
    try:
        address = _effective(ipaddress.ip_address(host_address.split("%", 1)[0]))  # fe80::1%eth0
    except ValueError:
        return f"{host_address} is not an IP address"
    if address.is_link_local:
        return f"{host_address} is link-local (e.g. the cloud metadata service): never allowed"
    if address.is_unspecified or address.is_multicast or address.is_reserved or address in _THIS_NETWORK:
        return f"{host_address} is an unspecified, multicast or reserved address: never allowed"
    if not address.is_global and not allow_private:
        return f"{host_address} is a loopback or private address (allow_private_networks is off)"
    return None


@dataclass
class Policy:
    """The policy of one download, and the refusals it made (to classify the failure afterwards)."""

    allow_private: bool = False
    refusals: list[str] = field(default_factory=list)

    def filter(self, host: Any, results: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        allowed = [r for r in results if address_refusal(str(r[4][0]), self.allow_private) is None]
        if results and not allowed:
            reason = address_refusal(str(results[0][4][0]), self.allow_private)
            message = f"blocked address: {host} resolves to {reason}"
            self.refusals.append(message)
            raise BlockedAddress(message)
        return allowed


_local = threading.local()
_install_lock = threading.Lock()
_system_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
    results = _system_getaddrinfo(host, port, *args, **kwargs)
    policy: Policy | None = getattr(_local, "policy", None)
    return results if policy is None else policy.filter(host, results)


def _install() -> None:
    with _install_lock:
        if socket.getaddrinfo is not _getaddrinfo:
            socket.getaddrinfo = _getaddrinfo  # a pass-through for every thread outside ``guarded``


@contextmanager
def guarded(policy: Policy) -> Iterator[Policy]:
    """Apply ``policy`` to every name resolution (hence every connection) of this thread inside the block."""
    _install()
    previous = getattr(_local, "policy", None)
    _local.policy = policy
    try:
        yield policy
    finally:
        _local.policy = previous


def check_host(host: str, port: int | None, policy: Policy) -> None:
    """Resolve ``host`` now and raise ``BlockedAddress`` when none of its addresses is allowed.

    A name that does not resolve passes: the download itself then fails as ``unreachable``.
    """
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        results: list[tuple[Any, ...]] = [(None, None, None, "", (host, port or 0))]  # a literal: no lookup
    except ValueError:
        try:
            results = _system_getaddrinfo(host, port or 0, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
    policy.filter(host, results)
