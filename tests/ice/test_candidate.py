"""Candidate lines in RFC 5245, Lync (x-candidate-ipv6, TCP-PASS/TCP-ACT) and draft-6 forms."""

from __future__ import annotations

import pytest

from ice.candidate import Candidate, is_draft6, parse_candidate, parse_draft6
from ice.errors import CandidateError


def test_rfc5245_relay_with_related_address_round_trips() -> None:
    value = "3 1 UDP 16648703 198.51.100.9 53122 typ relay raddr 192.0.2.44 rport 19462"
    c = parse_candidate(value)
    assert (c.type, c.related_address, c.related_port) == ("relay", "192.0.2.44", 19462)
    assert c.to_sdp() == value and c.to_aioice().host == "198.51.100.9"


def test_lync_tcp_candidates_keep_their_spelling_and_map_to_tcptype() -> None:
    c = parse_candidate("2 1 TCP-PASS 174455807 192.0.2.44 16410 typ host")
    assert not c.is_udp and c.tcptype == "passive"
    assert c.to_sdp().startswith("2 1 TCP-PASS ")


def test_ipv6_candidates_are_written_as_x_candidate_ipv6() -> None:
    c = parse_candidate("4 1 UDP 2130706431 2001:db8::44 19464 typ host generation 0")
    assert c.extensions == (("generation", "0"),)
    assert c.attribute() == "x-candidate-ipv6:4 1 UDP 2130706431 2001:db8::44 19464 typ host " \
                            "generation 0"
    v4 = Candidate("1", 1, "UDP", 1, "192.0.2.1", 9, "host")
    assert v4.attribute().startswith("candidate:")


def test_draft6_fallback_candidates_are_recognised_and_parsed() -> None:
    value = "Wxz0Nd4eYFs5p1ZYkBOMq7cQxSSQ8V4v 1 ZEq3Xy8PVzGcq/SrdwUZ9w UDP 0.830 10.0.1.20 50012"
    assert is_draft6(value) and not is_draft6("1 1 UDP 2130706431 10.0.1.20 50012 typ host")
    c = parse_draft6(value)
    assert (c.component, c.qvalue, c.address, c.port) == (1, 0.83, "10.0.1.20", 50012)


@pytest.mark.parametrize(("value", "words"), [
    ("1 1 UDP 1 10.0.0.1 9", "expected"),
    ("1 0 UDP 1 10.0.0.1 9 typ host", "component"),
    ("1 1 UDP 99999999999 10.0.0.1 9 typ host", "priority"),
    ("1 1 UDP 1 host.local 9 typ host", "not an IP address"),
    ("1 1 UDP 1 10.0.0.1 70000 typ host", "port"),
    ("1 1 UDP 1 10.0.0.1 9 typ weird", "type"),
    ("1 1 UDP 1 10.0.0.1 9 typ host raddr", "extension without a value"),
])
def test_bad_candidates_say_why(value: str, words: str) -> None:
    with pytest.raises(CandidateError, match=words):
        parse_candidate(value)
