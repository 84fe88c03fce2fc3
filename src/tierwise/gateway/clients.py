"""Who is on the other end: the client's address and scheme, believing proxies only if trusted.

``X-Forwarded-For`` and ``X-Forwarded-Proto`` are anyone's to write, so they are honoured only
when the direct peer is in ``[gateway] trusted_proxies``. The client is then the right-most
address of the ``X-Forwarded-For`` chain that is not itself a trusted proxy (each proxy
appends the address it saw; everything left of the first untrusted hop is the client's own
say). An entry that is not an IP address ends the walk at the proxy that passed it on, so
rotating garbage cannot make new addresses. Without a trusted peer: the peer's address.

uvicorn's own ``proxy_headers`` (which believes 127.0.0.1) is off in ``tierwise serve``, so the
ASGI ``client`` is the real peer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from starlette.datastructures import Headers
from starlette.types import Scope

UNKNOWN = "unknown"
"""The address of a request without a network peer (one shared throttle bucket)."""

Network = IPv4Network | IPv6Network
_CACHED = 4096
"""Addresses whose parse and trust are remembered (parsing one costs microseconds)."""


_LONGEST = 53
"""No IP address is written longer (a bracketed IPv4-mapped IPv6 one with a port): longer
text is no address and is neither parsed nor cached."""


def _address(text: str) -> str | None:
    """``text`` as a normalised IP address (IPv4-mapped IPv6 as IPv4), or None if not one."""
    return _parsed(text) if len(text) <= _LONGEST else None


@lru_cache(maxsize=_CACHED)
def _parsed(text: str) -> str | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [IPv6] or [IPv6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # IPv4:port (some proxies add the port)
        text = text.partition(":")[0]
    try:
        found = ip_address(text)
    except ValueError:
        return None
    if isinstance(found, IPv6Address) and found.ipv4_mapped is not None:
        return str(found.ipv4_mapped)
    return str(found)


class TrustedProxies:
    """The proxies whose forwarding headers are believed (none: nobody's)."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self._networks = tuple(networks)
        self._trusted = lru_cache(maxsize=_CACHED)(self._in_networks)

    def trusts(self, text: str) -> bool:
        """Whether ``text`` is the address of a trusted proxy."""
        return len(text) <= _LONGEST and self._trusted(text)

    def _in_networks(self, text: str) -> bool:
        address = _address(text)
        return address is not None and any(ip_address(address) in n for n in self._networks)

    def client(self, peer: str | None, headers: Mapping[str, str]) -> str:
        """The client's address for a request from ``peer`` carrying ``headers``."""
        if peer is None:
            return UNKNOWN
        if not self._networks or not self.trusts(peer):
            return peer
        return self._walk(peer, _split(_values(headers)))

    def _walk(self, peer: str, chain: list[str]) -> str:
        """The right-most hop of ``chain`` (after ``peer``) that is not a trusted proxy."""
        hop = peer
        while chain and self.trusts(hop):
            entry = chain.pop().strip()
            if _address(entry) is None:  # not an address: the proxy that passed it is known
                break
            hop = entry
        return _address(hop) or hop

    def https(self, scheme: str, peer: str | None, headers: Mapping[str, str]) -> bool:
        """Whether the client's request is https: ``scheme`` as the gateway saw it, or a
        trusted peer's ``X-Forwarded-Proto`` (its right-most value, the one it set)."""
        if scheme in ("https", "wss"):
            return True
        if peer is None or not self._networks or not self.trusts(peer):
            return False
        proto = headers.get("x-forwarded-proto", "").rpartition(",")[2]
        return proto.strip().lower() == "https"

    def of_scope(self, scope: Scope) -> str:
        """:meth:`client` for an ASGI request (its raw headers read only from a trusted peer)."""
        peer = scope.get("client")
        if not peer:
            return UNKNOWN
        host = str(peer[0])
        if not self._networks or not self.trusts(host):
            return host
        raw = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
        return self._walk(host, _split(raw))


def throttle_key(client: str) -> str:
    """What failed key checks are counted under: the address, or for IPv6 its /64 network
    (one subscriber's usual share, which a client could otherwise rotate through)."""
    return _network64(client) if ":" in client and len(client) <= _LONGEST else client


@lru_cache(maxsize=_CACHED)
def _network64(client: str) -> str:
    address = _address(client)
    if address is None or ":" not in address:  # not an address, or an IPv4-mapped one
        return address or client
    return str(ip_network(f"{address}/64", strict=False))


def _values(headers: Mapping[str, str]) -> list[str]:
    """Every ``X-Forwarded-For`` header's value, in order."""
    if isinstance(headers, Headers):
        return headers.getlist("x-forwarded-for")
    return [headers.get("x-forwarded-for", "")]


def _split(values: list[str]) -> list[str]:
    """The entries of ``X-Forwarded-For`` values, left to right (repeated headers in order)."""
    return [entry for value in values for entry in value.split(",") if entry.strip()]
