"""Client addresses behind trusted proxies, the handshake allowance and the session counts."""

from __future__ import annotations

import ipaddress

from spacesync.admission import Admission, client_address
from spacesync.observability.abuse import AbuseCounters

PROXIES = frozenset({ipaddress.ip_address("10.1.1.1"), ipaddress.ip_address("10.1.1.2")})


def test_untrusted_peer_is_the_client() -> None:
    assert client_address("198.51.100.7", ["1.2.3.4"], PROXIES) == "198.51.100.7"
    assert client_address("198.51.100.7", ["1.2.3.4"], frozenset()) == "198.51.100.7"


def test_right_most_untrusted_entry_behind_a_trusted_proxy() -> None:
    assert client_address("10.1.1.1", ["1.2.3.4"], PROXIES) == "1.2.3.4"
    spoofed = ["6.6.6.6, 1.2.3.4, 10.1.1.2"]
    assert client_address("10.1.1.1", spoofed, PROXIES) == "1.2.3.4"
    assert client_address("10.1.1.1", ["6.6.6.6", "1.2.3.4"], PROXIES) == "1.2.3.4"


def test_odd_forwarded_headers() -> None:
    assert client_address("10.1.1.1", [], PROXIES) == "10.1.1.1"
    assert client_address("10.1.1.1", ["10.1.1.2"], PROXIES) == "10.1.1.2"
    assert client_address("10.1.1.1", ["1.2.3.4, not-an-address"], PROXIES) == "10.1.1.1"
    assert client_address("::ffff:10.1.1.1", ["2001:db8::1"], PROXIES) == "2001:db8::1"


def test_handshake_allowance_refills_over_ten_seconds() -> None:
    admission = Admission(AbuseCounters(), handshakes=5)
    assert [admission.check_handshake("a", now=0.0) for _ in range(6)] == [None] * 5 + [
        "handshakeRate"
    ]
    assert admission.check_handshake("b", now=0.0) is None
    assert admission.check_handshake("a", now=2.1) is None
    assert admission.check_handshake("a", now=2.2) == "handshakeRate"
    admission.prune(now=100.0)
    assert admission._buckets == {}


def test_open_sessions_are_counted_until_closed() -> None:
    admission = Admission(AbuseCounters(), max_sessions=2)
    admission.opened("a")
    admission.opened("a")
    assert admission.check_handshake("a") == "connectionsPerAddress"
    admission.closed("a")
    assert admission.check_handshake("a") is None
    admission.closed("a")
    assert admission.sessions == {}


def test_refusals_are_counted_always_and_logged_sparingly() -> None:
    abuse = AbuseCounters()
    admission = Admission(abuse)
    for _ in range(5):
        admission.refused("E2005", "jsonp", "JSONP polling refused", "a")
    assert abuse.get("jsonp") == 5
    assert admission._suppressed[("jsonp", "a")] == 4
