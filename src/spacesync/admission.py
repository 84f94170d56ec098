"""Who is asking, and whether they may open another session.

Every limit that applies to an address (``MAX_CONNECTIONS_PER_IP``, ``HANDSHAKES_PER_IP``) and
every log line about a refused client use the *client* address: the peer address, or, when the
peer is one of ``TRUSTED_PROXIES``, the address that proxy put in ``X-Forwarded-For``. Without
that, everyone behind a load balancer shares one address and one limit, and the logs name only
the proxy.

The limits count Engine.IO sessions from their handshake until they close, not Socket.IO
connections: a client can open any number of Engine.IO sessions without ever sending a Socket.IO
CONNECT, and each one costs a socket, a queue and a file descriptor all the same.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .observability.abuse import AbuseCounters
from .observability.logging import log

HANDSHAKE_WINDOW = 10.0
"""``HANDSHAKES_PER_IP`` is a number of handshakes per this many seconds."""
LOG_EVERY = 60.0
"""A refusal of one kind from one address is logged at most once in this many seconds (each is
counted in ``/metrics``); an attacker cannot turn refusals into a flood of log lines."""
_MAX_REMEMBERED = 10_000

ADDRESS_KEY = "spacesync.address"
"""Key under which the client address travels with a request (and with the Engine.IO
environment of the session it opens)."""

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(value: str) -> Address | None:
    try:
        address = ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: frozenset[Address]
) -> str:
    """The client's address: ``peer``, unless ``peer`` is a trusted proxy; then the right-most
    ``X-Forwarded-For`` entry that is not a trusted proxy.

    Entries left of that one were written by the client itself and prove nothing; entries to its
    right were appended by proxies we trust. A header that names only trusted proxies yields the
    left-most of them; an entry that is not an address yields the peer (the proxy is misbehaving,
    and the peer is the one address we know is real).
    """
    peer = peer or ""
    if not trusted:
        return peer
    parsed_peer = _parse(peer)
    if parsed_peer is None or parsed_peer not in trusted:
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    if not hops:
        return peer
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            return peer
        if address not in trusted:
            return str(address)
    leftmost = _parse(hops[0])
    return str(leftmost) if leftmost is not None else peer


class Admission:
    """Per-address session counts, the handshake rate, and logging of refusals."""

    def __init__(
        self,
        abuse: AbuseCounters,
        *,
        max_sessions: int = 0,
        handshakes: int = 0,
        trusted_proxies: Iterable[str] = (),
    ) -> None:
        self.abuse = abuse
        self.max_sessions = max_sessions
        self.handshakes = handshakes
        self.trusted: frozenset[Address] = frozenset(
            a for a in (_parse(p) for p in trusted_proxies) if a is not None
        )
        self.sessions: dict[str, int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._logged: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    # -- addresses ----------------------------------------------------------------------------

    def address_of(self, peer: str | None, headers: Mapping[str, Any]) -> str:
        """The client address of a request from ``peer`` with these headers."""
        if not self.trusted:
            return peer or ""
        getall = getattr(headers, "getall", None)
        values = getall("X-Forwarded-For", []) if getall is not None else []
        if getall is None and "X-Forwarded-For" in headers:
            values = [headers["X-Forwarded-For"]]
        return client_address(peer, values, self.trusted)

    # -- limits -------------------------------------------------------------------------------

    def check_handshake(self, address: str, now: float | None = None) -> str | None:
        """The reason a new session from ``address`` is refused, or ``None`` to admit it.

        The concurrent-session limit is checked first (a refused attempt then costs the client
        nothing); every other attempt takes one handshake from the address's allowance, a
        bucket of ``handshakes`` that refills at that many per :data:`HANDSHAKE_WINDOW`.
        """
        if self.max_sessions and self.sessions.get(address, 0) >= self.max_sessions:
            return "connectionsPerAddress"
        if self.handshakes:
            now = time.monotonic() if now is None else now
            capacity = float(self.handshakes)
            tokens, last = self._buckets.get(address, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * capacity / HANDSHAKE_WINDOW)
            if tokens < 1.0:
                self._buckets[address] = (tokens, now)
                return "handshakeRate"
            self._buckets[address] = (tokens - 1.0, now)
        return None

    def opened(self, address: str) -> None:
        self.sessions[address] = self.sessions.get(address, 0) + 1

    def closed(self, address: str) -> None:
        left = self.sessions.get(address, 1) - 1
        if left > 0:
            self.sessions[address] = left
        else:
            self.sessions.pop(address, None)

    def prune(self, now: float | None = None) -> None:
        """Forget allowances that have refilled (an address that has been quiet for a whole
        window is indistinguishable from a new one) and old log suppressions."""
        now = time.monotonic() if now is None else now
        if self.handshakes:
            rate = self.handshakes / HANDSHAKE_WINDOW
            full = float(self.handshakes)
            self._buckets = {
                a: (tokens, last)
                for a, (tokens, last) in self._buckets.items()
                if tokens + (now - last) * rate < full
            }
        self._logged = {k: t for k, t in self._logged.items() if now - t < LOG_EVERY}
        self._suppressed = {k: n for k, n in self._suppressed.items() if k in self._logged}

    # -- refusals -----------------------------------------------------------------------------

    def refused(self, code: str, reason: str, message: str, address: str, **context: Any) -> None:
        """Count a refusal under ``reason`` and log it (warn, ``code``), at most once per
        :data:`LOG_EVERY` per reason and address; the next line says how many were not logged."""
        self.abuse.count(reason)
        key = (reason, address)
        now = time.monotonic()
        last = self._logged.get(key)
        if last is not None and now - last < LOG_EVERY:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._logged) >= _MAX_REMEMBERED:
            self.prune(now)
            if len(self._logged) >= _MAX_REMEMBERED:
                self._logged.clear()
                self._suppressed.clear()
        self._logged[key] = now
        unlogged = self._suppressed.pop(key, 0)
        if unlogged:
            context["notLogged"] = unlogged
        log.warn(code, message, reason=reason, address=address, **context)
