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
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.datastructures import Headers
from starlette.types import Scope

UNKNOWN = "unknown"
"""The address of a request without a network peer (one shared throttle bucket)."""

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


def _parse(text: str) -> Address | None:
    """``text`` as an IP address (IPv4-mapped IPv6 as IPv4), or None if it is not one."""
    try:
        found = ip_address(text.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if isinstance(found, IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


class TrustedProxies:
    """The proxies whose forwarding headers are believed (none: nobody's)."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self._networks = tuple(networks)

    def trusts(self, address: Address | None) -> bool:
        return address is not None and any(address in net for net in self._networks)

    def client(self, peer: str | None, headers: Mapping[str, str]) -> str:
        """The client's address for a request from ``peer`` carrying ``headers``."""
        if peer is None:
            return UNKNOWN
        hop = _parse(peer)
        if not self._networks or not self.trusts(hop):
            return str(hop) if hop is not None else peer
        chain = _forwarded_for(headers)
        while chain and self.trusts(hop):
            entry = _parse(chain.pop())
            if entry is None:  # not an address: the proxy that passed it is what we know
                break
            hop = entry
        return str(hop)

    def https(self, scheme: str, peer: str | None, headers: Mapping[str, str]) -> bool:
        """Whether the client's request is https: ``scheme`` as the gateway saw it, or a
        trusted peer's ``X-Forwarded-Proto`` (its right-most value, the one it set)."""
        if scheme in ("https", "wss"):
            return True
        if peer is None or not self.trusts(_parse(peer)):
            return False
        proto = headers.get("x-forwarded-proto", "").rpartition(",")[2]
        return proto.strip().lower() == "https"

    def of_scope(self, scope: Scope) -> str:
        """:meth:`client` for an ASGI request."""
        peer = scope.get("client")
        return self.client(peer[0] if peer else None, Headers(scope=scope))


def _forwarded_for(headers: Mapping[str, str]) -> list[str]:
    """Every ``X-Forwarded-For`` entry, left to right (repeated headers joined in order)."""
    if isinstance(headers, Headers):
        values = headers.getlist("x-forwarded-for")
    else:
        values = [headers.get("x-forwarded-for", "")]
    return [entry for value in values for entry in value.split(",") if entry.strip()]
